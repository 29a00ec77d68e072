//! One step, from its first attempt to its last: per-attempt timeout, retries
//! with exponential backoff and jitter, chaos, and the durable finish record.

use futures_util::FutureExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::Utc;
use rand::Rng;
use tokio::sync::mpsc;

use super::{context, ActionError, Event, Shared, StepContext, StepOutputs};
use crate::journal::record::{Outcome, Outputs, Record};
use crate::journal::writer::Durability;
use crate::plan::model::MAX_BACKOFF;

/// How a step's turn ended.
#[derive(Debug)]
pub enum StepOutcome {
    Succeeded {
        outputs: StepOutputs,
    },
    Failed {
        error: String,
    },
    /// Stopped by an interrupt: no finish record, so a resume finds it in doubt.
    Interrupted,
    /// An approval gate with nobody to ask.
    Paused,
}

/// Sent to the scheduler when the step no longer holds a concurrency slot (its
/// action is over), when it succeeded and its finish record waits for a sync,
/// and when its outcome is durable.
pub enum Message {
    Released(usize),
    /// The step's action succeeded and gave back its slot; its finish record is
    /// written and becomes durable with the next sync, which the walker asks
    /// for when it has nothing else to start.
    Finished(usize),
    Done(usize, StepOutcome),
}

pub async fn run_step(
    shared: Arc<Shared>,
    index: usize,
    first_attempt: u32,
    tx: mpsc::UnboundedSender<Message>,
) {
    // Whatever happens in here, the walker hears that the step ended: a step
    // that vanished without a word would leave the run waiting for ever.
    // Pinned in place: moved into `catch_unwind`, the future would be laid
    // out twice in this one's state.
    let attempts = std::pin::pin!(attempts(&shared, index, first_attempt, &tx));
    let outcome = std::panic::AssertUnwindSafe(attempts)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| StepOutcome::Failed {
            error: format!("phoenix failed inside this step: {}", panic_message(&panic)),
        });
    let _ = tx.send(Message::Done(index, outcome));
}

/// What a step's outputs give the steps after it: masked, as the journal
/// keeps them, with those that held a secret's value withheld (see
/// [`StepOutputs`]); said, as it happens, for the author to fix the plan.
pub(crate) fn withhold_secrets(shared: &Shared, id: &str, outputs: &Outputs) -> StepOutputs {
    let mut passed = StepOutputs::default();
    for (key, value) in outputs {
        let masked = shared.masker.mask(value);
        if let std::borrow::Cow::Owned(_) = masked {
            shared.events.emit(Event::Warning(format!(
                "step `{id}`: output `{key}` holds a secret's value; it is kept masked, and a step that reads it fails: give a step a secret with `{{{{ secrets.NAME }}}}`"
            )));
            passed.withheld.insert(key.clone());
        }
        passed.values.insert(key.clone(), masked.into_owned());
    }
    passed
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

async fn attempts(
    shared: &Arc<Shared>,
    index: usize,
    first_attempt: u32,
    tx: &mpsc::UnboundedSender<Message>,
) -> StepOutcome {
    let step = &shared.plan.steps[index];
    let id = step.id.value.clone();
    let phase = step.phase.value;
    let budget = step.retries + 1;
    // A step that fails or pauses keeps its slot until the walker hears of
    // it (`Message::Done`): a slot given back first would let the walker
    // start another step before it knows the run must stop starting them.
    let mut released = false;
    let mut release = || {
        if !released {
            released = true;
            let _ = tx.send(Message::Released(index));
        }
    };
    for n in 0..budget {
        let attempt = first_attempt + n;
        let started = Instant::now();
        let record = Record::Started {
            step: id.clone(),
            attempt,
            at: Utc::now(),
        };
        // A step that must not run twice is known to have started before it does.
        if step.idempotent {
            shared.journal.append(record);
        } else if let Err(e) = shared.journal.append_durable(record).await {
            return unrecorded(shared, e, |e| {
                format!("step `{id}` was not started: its start could not be recorded ({e})")
            });
        }
        shared.events.emit(Event::StepStarted {
            step: id.clone(),
            phase,
            attempt,
        });
        let log_path = shared.run.logs.join(format!("{id}.{attempt}.log"));
        let result = run_attempt(shared, index, attempt, &log_path).await;
        let duration = started.elapsed();
        learn_made_secrets(shared, &id, &log_path);
        let error = match result {
            Ok(outputs) => {
                let passed = withhold_secrets(shared, &id, &outputs);
                // Masked as it is written, which names what it withholds.
                let record = finished(&id, attempt, Outcome::Succeeded, outputs, None, duration);
                // The walker syncs the journal when it needs this step done.
                // A step that must not run twice is made durable at once: the
                // window in which a lost machine would leave it in doubt stays
                // as short as it can be.
                let durable = if step.idempotent {
                    let durable = shared.journal.append_waiting(record, Durability::OnDemand);
                    let _ = tx.send(Message::Finished(index));
                    durable
                } else {
                    release();
                    shared.journal.append_waiting(record, Durability::Now)
                };
                if let Err(e) = durable.await {
                    return unrecorded(shared, e, |e| {
                        format!("step `{id}` succeeded, but its finish could not be recorded ({e}): a resume finds it in doubt")
                    });
                }
                shared.events.emit(Event::StepFinished {
                    step: id.clone(),
                    phase,
                    attempt,
                    succeeded: true,
                    last: true,
                    duration,
                    error: None,
                    log_tail: None,
                    log: None,
                });
                maybe_crash(shared, &id).await;
                return StepOutcome::Succeeded { outputs: passed };
            }
            Err(ActionError::Interrupted) => {
                release();
                return StepOutcome::Interrupted;
            }
            Err(ActionError::AwaitingApproval { prompt }) => {
                let record = Record::Paused {
                    step: id.clone(),
                    at: Utc::now(),
                    prompt: prompt.clone(),
                };
                let _ = shared.journal.append_durable(record).await;
                shared.events.emit(Event::Paused {
                    step: id.clone(),
                    prompt,
                });
                return StepOutcome::Paused;
            }
            Err(error) => shared.describe(&error),
        };
        let last = n + 1 == budget || shared.interrupt.is_cancelled();
        let log_tail = tail(&log_path, 20);
        let record = finished(
            &id,
            attempt,
            Outcome::Failed,
            Outputs::new(),
            Some(error.clone()),
            duration,
        );
        if last {
            if let Err(e) = shared.journal.append_durable(record).await {
                return unrecorded(shared, e, |e| {
                    format!("step `{id}` failed, and its failure could not be recorded ({e})")
                });
            }
        } else {
            shared.journal.append(record);
        }
        shared.events.emit(Event::StepFinished {
            step: id.clone(),
            phase,
            attempt,
            succeeded: false,
            last,
            duration,
            error: Some(error.clone()),
            log_tail: log_tail.clone(),
            log: log_tail.is_some().then(|| log_path.clone()),
        });
        if last {
            maybe_crash(shared, &id).await;
            return StepOutcome::Failed { error };
        }
        let delay = backoff(step.backoff, n);
        shared.events.emit(Event::StepRetrying {
            step: id.clone(),
            attempt,
            error,
            delay,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.interrupt.cancelled() => {
                release();
                return StepOutcome::Interrupted;
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// A step whose record the journal could not take (a full disk): said, so
/// that the step does not just vanish from the terminal, and failed, so that
/// the run starts nothing new. The run's own error says how to go on.
fn unrecorded(
    shared: &Shared,
    error: crate::journal::writer::JournalWriteError,
    say: impl FnOnce(&str) -> String,
) -> StepOutcome {
    let error = error.to_string();
    shared.events.emit(Event::Warning(say(&error)));
    StepOutcome::Failed { error }
}

fn finished(
    step: &str,
    attempt: u32,
    outcome: Outcome,
    outputs: Outputs,
    error: Option<String>,
    duration: Duration,
) -> Record {
    Record::Finished {
        step: step.to_string(),
        attempt,
        at: Utc::now(),
        outcome,
        outputs,
        withheld: Default::default(),
        error,
        duration_seconds: duration.as_secs_f64(),
    }
}

/// The delay before retry `n + 1`: `first * 2^n`, capped, with up to 25% jitter
/// either way so that steps failing together do not retry together.
pub fn backoff(first: Duration, n: u32) -> Duration {
    let base = first
        .saturating_mul(2u32.saturating_pow(n))
        .min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.75..=1.25);
    base.mul_f64(jitter).min(MAX_BACKOFF)
}

async fn run_attempt(
    shared: &Arc<Shared>,
    index: usize,
    attempt: u32,
    log_path: &Path,
) -> Result<Outputs, ActionError> {
    let step = &shared.plan.steps[index];
    if let Some(chaos) = &shared.chaos {
        if chaos.fail_attempt() {
            let _ = shared
                .journal
                .append_durable(Record::Chaos {
                    step: step.id.value.clone(),
                    at: Utc::now(),
                    event: format!("fail (attempt {attempt})"),
                })
                .await;
            return Err(ActionError::Chaos);
        }
    }
    // Nothing to render, nothing to run.
    if matches!(step.action.value, crate::actions::Action::Noop) {
        return Ok(Outputs::new());
    }
    let cancel = shared.interrupt.child_token();
    let ctx = StepContext {
        shared,
        step,
        attempt,
        cancel: cancel.clone(),
        log_path: log_path.to_path_buf(),
        context: context::build(shared, step)?,
    };
    let action = step.action.value.run(&ctx);
    let result = match step.timeout {
        None => action.await,
        Some(limit) => {
            let mut action = action;
            tokio::select! {
                result = &mut action => result,
                _ = tokio::time::sleep(limit) => {
                    cancel.cancel();
                    // Let the action stop its processes before the step moves on.
                    let _ = action.await;
                    Err(ActionError::TimedOut(limit))
                }
            }
        }
    };
    match result {
        Err(_) if shared.interrupt.is_cancelled() => Err(ActionError::Interrupted),
        other => other,
    }
}

/// `--chaos kill=P`: after a step finishes, abort as a crash would.
async fn maybe_crash(shared: &Shared, step: &str) {
    let Some(chaos) = &shared.chaos else { return };
    if chaos.kill_after_step() {
        let _ = shared
            .journal
            .append_durable(Record::Chaos {
                step: step.to_string(),
                at: Utc::now(),
                event: "kill".into(),
            })
            .await;
        shared.events.emit(Event::Warning(format!(
            "chaos: killing phoenix after step `{step}`"
        )));
        std::process::abort();
    }
}

/// A secret the step made (a password it generated into a file the plan
/// declares as a secret) is masked from the step's end on: in its outputs
/// and record, which are masked after this, and in what it printed of it
/// before phoenix knew it, its log masked again.
fn learn_made_secrets(shared: &Shared, id: &str, log: &Path) {
    if !shared.secrets.read_new(&shared.masker) {
        return;
    }
    if let Err(error) = mask_again(log, &shared.masker) {
        shared.events.emit(Event::Warning(format!(
            "step `{id}`: its log `{}` may hold a secret the step made, and could not be masked again: {}",
            log.display(),
            crate::error_text(&error)
        )));
    }
}

/// Masks a finished step's log again, line by line, for a secret learned
/// after it was written; replaced whole, so that a crash in between leaves
/// either log. A step that printed nothing has no log.
fn mask_again(log: &Path, masker: &crate::exec::secrets::Masker) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let file = match std::fs::File::open(log) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let masked = log.with_extension("log.masking");
    let mut out = std::io::BufWriter::new(crate::journal::local::create_private(&masked)?);
    let mut line = Vec::new();
    let mut reader = std::io::BufReader::new(file);
    let result = (|| {
        while reader.read_until(b'\n', &mut line)? > 0 {
            out.write_all(masker.mask(&String::from_utf8_lossy(&line)).as_bytes())?;
            line.clear();
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&masked, log)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&masked);
    }
    result
}

/// The last `lines` lines of a log file, if it has any, made [`readable`].
pub fn tail(path: &Path, lines: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(16 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| readable(line))
        .collect::<Vec<_>>()
        .join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// The longest line of a tail shown whole, in characters.
const LONGEST_LINE: usize = 400;

/// A line of a step's output as it is shown on a terminal, in CI's log and
/// in the reports: a line a progress display wrote over with `\r` as its
/// last text, escape sequences taken out (a colour is lost, but a
/// cursor move, a screen clear or a window title would act on the reader's
/// terminal), any other control character but a tab shown as `�`, and a
/// line longer than [`LONGEST_LINE`] cut, saying how much was left out. The
/// log keeps the output as it was.
fn readable(line: &str) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let stripped = console::strip_ansi_codes(line);
    let mut out = String::with_capacity(stripped.len().min(LONGEST_LINE + 40));
    let mut chars = stripped.chars();
    for (shown, c) in chars.by_ref().enumerate() {
        if shown == LONGEST_LINE {
            let left = 1 + chars.count();
            out.push_str(&format!(" … ({left} more characters)"));
            break;
        }
        out.push(if c.is_control() && c != '\t' {
            '\u{FFFD}'
        } else {
            c
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_is_shown_without_escapes_controls_or_endless_lines() {
        assert_eq!(
            readable("\x1b[31mred\x1b[0m \x1b]0;title\x07done\tok"),
            "red done\tok"
        );
        assert_eq!(readable("nul\0bell\x07"), "nul\u{FFFD}bell\u{FFFD}");
        // What a terminal ends up showing of a progress display.
        assert_eq!(
            readable("copied 10%\rcopied 50%\rcopied 100%"),
            "copied 100%"
        );
        assert_eq!(readable("done\r"), "done");
        let long = "é".repeat(LONGEST_LINE + 5);
        let shown = readable(&long);
        assert!(shown.starts_with(&"é".repeat(LONGEST_LINE)));
        assert!(shown.ends_with(" … (5 more characters)"), "{shown}");
        assert_eq!(
            readable(&"x".repeat(LONGEST_LINE)),
            "x".repeat(LONGEST_LINE)
        );
    }
}
