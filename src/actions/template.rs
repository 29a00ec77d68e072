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

/// Renders `source` (a file or a directory tree) with the step's full context,
/// as `cp -r` would copy it: directories (empty ones too) and symbolic links
/// made again, each file's permission bits kept unless `mode` is given, a
/// binary file (one with a NUL byte: a keystore, an image) copied as it is,
/// `.git` left out. Every file is rendered in memory first, so an error
/// writes nothing; then each is written atomically (a temporary file beside
/// it, then a rename).
pub async fn run(spec: &TemplateSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let source = ctx.path(&spec.source)?;
    let dest = ctx.path(&spec.dest)?;
    let context = crate::exec::context::build_full(ctx.shared, ctx.step)?;
    let tree = collect(&source)?;
    let mut rendered = Vec::with_capacity(tree.files.len());
    for file in &tree.files {
        // Named as the plan's author finds it: from the plan's directory.
        let name = file
            .path
            .strip_prefix(&ctx.shared.plan.dir)
            .unwrap_or(&file.path)
            .display()
            .to_string();
        let bytes = std::fs::read(&file.path).map_err(|source| ActionError::Io {
            action: "read template",
            path: file.path.clone(),
            source,
        })?;
        let output = if bytes.contains(&0) {
            bytes
        } else {
            let text = String::from_utf8(bytes).map_err(|e| ActionError::Template {
                file: name.clone(),
                line: Some(line_of(e.as_bytes(), e.utf8_error().valid_up_to())),
                message: "not UTF-8 text (a template is read as UTF-8; a file with a NUL byte is copied as binary)".to_string(),
            })?;
            crate::exec::context::refuse_withheld_in(ctx.shared, &text).map_err(|e| {
                ActionError::Template {
                    file: name.clone(),
                    line: None,
                    message: e.to_string(),
                }
            })?;
            render(&name, &text, &context)?.into_bytes()
        };
        // A file that holds a secret is its owner's alone unless `mode`
        // says otherwise: a configuration with a password in it is not
        // world-readable by default.
        let mode = match spec.mode {
            Some(mode) => Mode::Exact(mode),
            None if reveals(ctx, &output) => Mode::Created(file.mode & 0o700),
            None => Mode::Created(file.mode),
        };
        rendered.push((file.relative.clone(), output, mode));
    }
    rendered.sort();
    let single = tree.files.len() == 1 && tree.files[0].relative.as_os_str().is_empty();
    let target = |relative: &Path| {
        if single {
            dest.clone()
        } else {
            dest.join(relative)
        }
    };
    if !single {
        // `dest` itself first: an empty tree still makes its directory.
        for dir in std::iter::once(Path::new("")).chain(tree.dirs.iter().map(PathBuf::as_path)) {
            make_dir(&dest, dir)?;
        }
    }
    let mut digest = Sha256::new();
    for (relative, output, mode) in &rendered {
        write_atomically(&target(relative), output, *mode)?;
        digest.update(relative.as_os_str().as_encoded_bytes());
        digest.update([0]);
        digest.update(output);
        digest.update([0]);
    }
    for (relative, link) in &tree.links {
        link_atomically(&target(relative), link)?;
        digest.update(relative.as_os_str().as_encoded_bytes());
        digest.update([1]);
        digest.update(link.as_os_str().as_encoded_bytes());
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

fn reveals(ctx: &StepContext<'_>, output: &[u8]) -> bool {
    ctx.shared.masker.reveals(&String::from_utf8_lossy(output))
}

/// The 1-based line of byte `offset` in `bytes`.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count()
}

/// What a rendered file's permission bits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// The plan's `mode`, exactly.
    Exact(u32),
    /// The source's bits, narrowed by the umask as `cp` does.
    Created(u32),
}

/// A template source, as found: paths relative to `source` (empty when it is
/// a single file).
#[derive(Debug, Default)]
struct Tree {
    files: Vec<SourceFile>,
    /// Every directory under `source`, parents before children.
    dirs: Vec<PathBuf>,
    /// Symbolic links, with where they point, made again as they are.
    links: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug)]
struct SourceFile {
    relative: PathBuf,
    path: PathBuf,
    /// Its permission bits (no setuid, setgid or sticky bit).
    mode: u32,
}

/// Where git keeps a repository (a directory, or a submodule's file): not
/// configuration, and never rendered.
const GIT_DIR: &str = ".git";

fn collect(source: &Path) -> Result<Tree, ActionError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ActionError::Io {
            action,
            path,
            source,
        }
    };
    let meta = std::fs::metadata(source).map_err(io("read template", source))?;
    let mut tree = Tree::default();
    if meta.is_file() {
        tree.files.push(SourceFile {
            relative: PathBuf::new(),
            path: source.to_path_buf(),
            mode: meta.permissions().mode() & 0o777,
        });
        return Ok(tree);
    }
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let entry = entry.map_err(io("list", &dir))?;
            if entry.file_name() == GIT_DIR {
                continue;
            }
            let path = entry.path();
            let relative = path.strip_prefix(source).unwrap_or(&path).to_path_buf();
            // Not followed: a link is made again as it is, as `cp -r` does.
            let meta = entry.metadata().map_err(io("list", &path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                tree.dirs.push(relative);
                stack.push(path);
            } else if kind.is_file() {
                tree.files.push(SourceFile {
                    relative,
                    path,
                    mode: meta.permissions().mode() & 0o777,
                });
            } else if kind.is_symlink() {
                let link = std::fs::read_link(&path).map_err(io("read the link", &path))?;
                tree.links.push((relative, link));
            } else {
                return Err(ActionError::Io {
                    action: "render",
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a file, a directory or a symbolic link (a template tree holds no fifo, socket or device)",
                    ),
                });
            }
        }
    }
    tree.dirs.sort();
    tree.links.sort();
    Ok(tree)
}

/// Makes `dest/relative`, a directory, refusing to go through a symbolic
/// link under `dest`: one left there (by an earlier render of another tree,
/// or by hand) would have the files written wherever it points.
fn make_dir(dest: &Path, relative: &Path) -> Result<(), ActionError> {
    let mut path = dest.to_path_buf();
    std::fs::create_dir_all(&path).map_err(|source| ActionError::Io {
        action: "create",
        path: path.clone(),
        source,
    })?;
    for part in relative.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() {
                    "a symbolic link: the template's files would be written where it points; remove it first"
                } else {
                    "not a directory, where the template has one; remove it first"
                };
                return Err(ActionError::Io {
                    action: "render into",
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, what),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).map_err(|source| ActionError::Io {
                    action: "create",
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(ActionError::Io {
                    action: "create",
                    path,
                    source,
                });
            }
        }
    }
    Ok(())
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

fn write_atomically(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), ActionError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    in_place(path, |temp| {
        let created = match mode {
            Mode::Exact(bits) | Mode::Created(bits) => bits,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(created)
            .open(temp)
            .and_then(|mut file| file.write_all(bytes).map(|()| file))
            .map_err(|e| ("write", e))?;
        if let Mode::Exact(bits) = mode {
            // The umask may have narrowed the mode at creation: set it exactly,
            // before the sync, which then makes the mode durable with the data.
            file.set_permissions(std::fs::Permissions::from_mode(bits))
                .map_err(|e| ("set the mode of", e))?;
        }
        file.sync_all().map_err(|e| ("write", e))
    })
}

/// Makes `path` a symbolic link to `link` (as the source had it), replacing
/// what was there by a rename, as a file is.
fn link_atomically(path: &Path, link: &Path) -> Result<(), ActionError> {
    in_place(path, |temp| {
        std::os::unix::fs::symlink(link, temp).map_err(|e| ("link", e))
    })
}

/// Makes `path` as `make` makes it under a temporary name beside it, then
/// renames it into place, the move made durable. `make` fails with what it
/// was doing.
fn in_place(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), (&'static str, std::io::Error)>,
) -> Result<(), ActionError> {
    let io = |action: &'static str, source| ActionError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let temp = fresh_temp(path)?;
    make(&temp).map_err(|(action, source)| io(action, source))?;
    std::fs::rename(&temp, path).map_err(|e| io("move into place", e))?;
    super::sync_parent(path).map_err(|e| io("make durable the move of", e))
}

/// The temporary name `path` is made under before its rename, with nothing
/// there: a file left by an earlier attempt of this process would keep its
/// mode, and a link cannot be made over one.
fn fresh_temp(path: &Path) -> Result<PathBuf, ActionError> {
    let temp = super::beside(path, "render")?;
    match std::fs::remove_file(&temp) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(ActionError::Io {
            action: "remove",
            path: temp,
            source,
        }),
        _ => Ok(temp),
    }
}
