//! `template`: render a file or a directory tree with the plan's context.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;
use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["source", "dest", "mode"];

#[derive(Clone, Debug)]
pub struct TemplateSpec {
    pub source: Spanned<String>,
    pub dest: Spanned<String>,
    /// Permission bits for the rendered files.
    pub mode: Option<u32>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<TemplateSpec> {
    let source = fields.required_string("source", diags);
    let dest = fields.required_string("dest", diags);
    let mode = match fields.string("mode", diags) {
        Some(text) => match parse_mode(&text) {
            Some(mode) => Some(mode),
            None => {
                diags.error(
                    fields.source,
                    text.span,
                    "file-mode",
                    format!(
                        "`mode` in {} must be an octal file mode such as \"0640\", found `{}`",
                        fields.what, text.value
                    ),
                );
                None
            }
        },
        None => None,
    };
    Some(TemplateSpec {
        source: source?,
        dest: dest?,
        mode,
    })
}

/// `"0640"` or `"640"`: octal permission bits, at most `07777`.
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Renders `source` (a file or a tree) with the step's full context. Every file
/// is rendered in memory first, so an error writes nothing; then each is
/// written atomically (a temporary file beside it, then a rename).
pub async fn run(spec: &TemplateSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let source = ctx.path(&spec.source)?;
    let dest = ctx.path(&spec.dest)?;
    let context = crate::exec::context::build_full(ctx.shared, ctx.step)?;
    let files = collect(&source)?;
    let mut rendered = Vec::with_capacity(files.len());
    for (relative, path) in &files {
        let text = std::fs::read_to_string(path).map_err(|source| ActionError::Io {
            action: "read template",
            path: path.clone(),
            source,
        })?;
        // Named as the plan's author finds it: from the plan's directory.
        let name = path
            .strip_prefix(&ctx.shared.plan.dir)
            .unwrap_or(path)
            .display()
            .to_string();
        crate::exec::context::refuse_withheld_in(ctx.shared, &text).map_err(|e| {
            ActionError::Template {
                file: name.clone(),
                line: None,
                message: e.to_string(),
            }
        })?;
        let output = render(&name, &text, &context)?;
        rendered.push((relative.clone(), output));
    }
    rendered.sort();
    let single = files.len() == 1 && files[0].0.as_os_str().is_empty();
    let mut digest = Sha256::new();
    for (relative, output) in &rendered {
        let target = if single {
            dest.clone()
        } else {
            dest.join(relative)
        };
        // A file that holds a secret is its owner's alone unless `mode`
        // says otherwise: a configuration with a password in it is not
        // world-readable by default.
        let mode = spec.mode.unwrap_or(if ctx.shared.masker.reveals(output) {
            0o600
        } else {
            0o644
        });
        write_atomically(&target, output.as_bytes(), mode)?;
        digest.update(relative.to_string_lossy().as_bytes());
        digest.update([0]);
        digest.update(output.as_bytes());
        digest.update([0]);
    }
    Ok(Outputs::from([
        ("files".to_string(), rendered.len().to_string()),
        (
            "sha256".to_string(),
            crate::plan::validate::hex(&digest.finalize()),
        ),
    ]))
}

/// `(path relative to source, path)` of every file: one with an empty relative
/// path when `source` is a file.
fn collect(source: &Path) -> Result<Vec<(PathBuf, PathBuf)>, ActionError> {
    let meta = std::fs::metadata(source).map_err(|e| ActionError::Io {
        action: "read template",
        path: source.to_path_buf(),
        source: e,
    })?;
    if meta.is_file() {
        return Ok(vec![(PathBuf::new(), source.to_path_buf())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| ActionError::Io {
            action: "list",
            path: dir.clone(),
            source: e,
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| ActionError::Io {
                action: "list",
                path: dir.clone(),
                source: e,
            })?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| ActionError::Io {
                action: "list",
                path: path.clone(),
                source: e,
            })?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let relative = path.strip_prefix(source).unwrap_or(&path).to_path_buf();
                out.push((relative, path));
            }
        }
    }
    Ok(out)
}

fn render(name: &str, text: &str, context: &minijinja::Value) -> Result<String, ActionError> {
    let env = crate::plan::interpolate::environment();
    let error = |e: minijinja::Error| ActionError::Template {
        file: name.to_string(),
        line: e.line(),
        message: e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string()),
    };
    let template = env.template_from_named_str(name, text).map_err(error)?;
    let mut out = template.render(context).map_err(error)?;
    // minijinja drops the final newline; config files keep theirs.
    if text.ends_with('\n') && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ActionError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| ActionError::Io {
            action,
            path,
            source,
        }
    };
    let temp = super::beside(path, "render")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(io("write"))?;
    file.write_all(bytes).map_err(io("write"))?;
    // The umask may have narrowed the mode at creation: set it exactly,
    // before the sync, which then makes the mode durable with the data.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of"))?;
    file.sync_all().map_err(io("write"))?;
    std::fs::rename(&temp, path).map_err(io("move into place"))?;
    super::sync_parent(path).map_err(io("make durable the move of"))?;
    Ok(())
}
