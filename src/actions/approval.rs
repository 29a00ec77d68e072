//! `approval`: a manual gate before a step that needs a person's yes.

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["prompt"];

#[derive(Clone, Debug)]
pub struct ApprovalSpec {
    pub prompt: Spanned<String>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<ApprovalSpec> {
    Some(ApprovalSpec {
        prompt: fields.required_string("prompt", diags)?,
    })
}
