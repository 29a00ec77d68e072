//! `approval`: a manual gate before a step that needs a person's yes.

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;
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

/// Approved by `--yes` or `--approve STEP`, or by a person at the terminal;
/// with nobody to ask, the run pauses here.
pub async fn run(spec: &ApprovalSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    // Shown on the terminal, journaled and reported: masked like everything
    // else Phoenix writes.
    let prompt = ctx
        .shared
        .masker
        .mask(&ctx.render(&spec.prompt)?)
        .into_owned();
    let approvals = &ctx.shared.approvals;
    let id = ctx.step.id.as_str();
    let by = if approvals.all {
        Some(format!("{} (--yes)", current_user()))
    } else if approvals.steps.contains(id) {
        Some(format!("{} (--approve)", current_user()))
    } else if approvals.interactive {
        match ask(&format!("{prompt} [y/N] "), ctx).await?.as_str() {
            "y" | "yes" => Some(current_user()),
            _ => return Err(ActionError::Denied),
        }
    } else {
        None
    };
    let Some(by) = by else {
        return Err(ActionError::AwaitingApproval { prompt });
    };
    ctx.shared.journal.append(crate::journal::Record::Approved {
        step: id.to_string(),
        at: chrono::Utc::now(),
        by: by.clone(),
        host: host_name(),
    });
    let mut outputs = Outputs::new();
    outputs.insert("approved_by".into(), by);
    Ok(outputs)
}

/// The terminal, one question at a time: two gates ready together must not
/// ask at once, or an answer typed for one could approve the other. A read
/// left waiting by a question that timed out or was interrupted is kept
/// here: what the person types next answers the next question.
static TERMINAL: tokio::sync::Mutex<Option<tokio::task::JoinHandle<String>>> =
    tokio::sync::Mutex::const_new(None);

/// Asks at the terminal; the answer trimmed and in lower case. An interrupt
/// or the step's timeout ends the wait: the read goes on on its thread, which
/// the process does not wait for.
async fn ask(question: &str, ctx: &StepContext<'_>) -> Result<String, ActionError> {
    /// Gives the progress display back however the wait ends.
    struct Prompting<'a>(&'a dyn crate::exec::EventSink);
    impl Drop for Prompting<'_> {
        fn drop(&mut self) {
            self.0.prompting(false);
        }
    }
    let mut terminal = tokio::select! {
        terminal = TERMINAL.lock() => terminal,
        _ = ctx.cancel.cancelled() => return Err(ActionError::Interrupted),
    };
    let events = ctx.shared.events.as_ref();
    events.prompting(true);
    let _prompting = Prompting(events);
    crate::stderr_question(question);
    let mut read = terminal.take().unwrap_or_else(|| {
        tokio::task::spawn_blocking(|| {
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            answer
        })
    });
    tokio::select! {
        answer = &mut read => {
            crate::question_answered();
            Ok(answer.unwrap_or_default().trim().to_ascii_lowercase())
        }
        _ = ctx.cancel.cancelled() => {
            *terminal = Some(read);
            // The question stays unanswered: what comes next starts a line.
            crate::question_abandoned();
            Err(ActionError::Interrupted)
        }
    }
}

/// The user running phoenix, for the record of who approved.
pub fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
