//! `template`: render a file or a directory tree with the plan's context.

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
