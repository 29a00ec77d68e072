//! The terminal view of a run: progress bars on a TTY, plain lines elsewhere,
//! JSON lines with `--log-format json`. It only consumes executor events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{Event, EventSink};
use crate::journal::record::RunResult;
use crate::plan::Phase;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars: stderr is a terminal.
    Bars,
    /// One line an event.
    Lines,
    /// One JSON object an event (`--log-format json`).
    Json,
}

pub struct Terminal {
    mode: Mode,
    quiet: bool,
    verbose: bool,
    color: bool,
    bars: Mutex<Option<Bars>>,
}

struct Bars {
    multi: MultiProgress,
    phases: HashMap<Phase, ProgressBar>,
    running: HashMap<String, ProgressBar>,
}

impl Terminal {
    pub fn new(mode: Mode, quiet: bool, verbose: bool, color: bool) -> Self {
        Terminal {
            mode,
            quiet,
            verbose,
            color,
            bars: Mutex::new(None),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn line(&self, text: String) {
        let guard = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            // A closed stderr (`phoenix run … 2>&1 | head`) must not stop the run.
            Some(bars) => bars.multi.suspend(|| crate::stderr_line(text)),
            None => crate::stderr_line(text),
        }
    }

    /// `--log-format json`: each event as a structured `tracing` event, which the
    /// JSON subscriber set up by the CLI writes as one object a line on stderr.
    fn json(&self, event: &Event) {
        const T: &str = "phoenix::events";
        match event {
            Event::RunStarted {
                run_id,
                plan,
                steps,
                drill,
                resumed,
                ..
            } => {
                tracing::info!(target: T, event = "run_started", run_id = %run_id, plan = %plan, steps, drill, resumed)
            }
            Event::StepStarted {
                step,
                phase,
                attempt,
            } => {
                tracing::info!(target: T, event = "step_started", step = %step, phase = %phase, attempt)
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
                delay,
            } => {
                tracing::warn!(target: T, event = "step_retrying", step = %step, attempt, error = %error, delay_seconds = delay.as_secs_f64())
            }
            Event::StepFinished {
                step,
                phase,
                attempt,
                succeeded,
                duration,
                error,
                log,
                ..
            } => {
                let state = if *succeeded { "succeeded" } else { "failed" };
                let log = log.as_ref().map(|l| l.display().to_string());
                if *succeeded {
                    tracing::info!(target: T, event = "step_finished", step = %step, phase = %phase, attempt, state, duration_seconds = duration.as_secs_f64())
                } else {
                    tracing::error!(target: T, event = "step_finished", step = %step, phase = %phase, attempt, state, duration_seconds = duration.as_secs_f64(), error = error.as_deref().unwrap_or(""), log = log.as_deref().unwrap_or(""))
                }
            }
            Event::StepSkipped {
                step,
                phase,
                reason,
            } => {
                tracing::warn!(target: T, event = "step_skipped", step = %step, phase = %phase, reason = %reason)
            }
            Event::Progress {
                step,
                done,
                total,
                elapsed,
            } => {
                tracing::debug!(target: T, event = "progress", step = %step, bytes = done, total_bytes = total, bytes_per_second = *done as f64 / elapsed.as_secs_f64().max(0.001))
            }
            Event::Paused { step, prompt } => {
                tracing::warn!(target: T, event = "paused", step = %step, prompt = %prompt)
            }
            Event::Warning(message) => {
                tracing::warn!(target: T, event = "warning", message = %message)
            }
            Event::Info(message) => tracing::info!(target: T, event = "info", message = %message),
            Event::RunFinished {
                run_id,
                result,
                duration,
            } => {
                tracing::info!(target: T, event = "run_finished", run_id = %run_id, result = result.as_str(), duration_seconds = duration.as_secs_f64())
            }
        }
    }

    fn start_bars(&self, per_phase: &[(Phase, usize)]) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut phases = HashMap::new();
        for (phase, count) in per_phase.iter().filter(|(_, c)| *c > 0) {
            let bar = multi.add(ProgressBar::new(*count as u64));
            bar.set_style(style.clone());
            bar.set_prefix(phase.name());
            phases.insert(*phase, bar);
        }
        *self.bars.lock().unwrap_or_else(|e| e.into_inner()) = Some(Bars {
            multi,
            phases,
            running: HashMap::new(),
        });
    }
}

/// `1.5 GiB`, `200 MiB`, `12 KiB`.
pub(crate) fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Durations as reports write them: `1.2s` below a minute, `3m 5s` above.
fn seconds(duration: &Duration) -> String {
    super::markdown::duration(duration.as_secs_f64())
}

impl EventSink for Terminal {
    fn emit(&self, event: Event) {
        if self.mode == Mode::Json {
            return self.json(&event);
        }
        match &event {
            Event::RunStarted { per_phase, .. } if self.mode == Mode::Bars && !self.quiet => {
                self.start_bars(per_phase)
            }
            Event::StepStarted { step, attempt, .. } if self.mode == Mode::Bars => {
                let mut guard = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(bars) = guard.as_mut() {
                    let spinner = bars.multi.add(ProgressBar::new_spinner());
                    spinner.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    let retry = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    spinner.set_message(format!("{step}{retry}"));
                    spinner.enable_steady_tick(Duration::from_millis(120));
                    bars.running.insert(step.clone(), spinner);
                }
                return;
            }
            _ => {}
        }
        let settled = match &event {
            Event::StepFinished {
                step, phase, last, ..
            } => Some((step, phase, *last)),
            Event::StepSkipped { step, phase, .. } => Some((step, phase, true)),
            _ => None,
        };
        if let Some((step, phase, last)) = settled {
            let mut guard = self.bars.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(bars) = guard.as_mut() {
                if let Some(spinner) = bars.running.remove(step.as_str()) {
                    spinner.finish_and_clear();
                    bars.multi.remove(&spinner);
                }
                if let (true, Some(bar)) = (last, bars.phases.get(phase)) {
                    bar.inc(1);
                }
            }
        }
        let text = match event {
            Event::RunStarted {
                run_id,
                plan,
                steps,
                drill,
                resumed,
                ..
            } => {
                if self.quiet {
                    return;
                }
                let kind = if drill { "drill" } else { "recovery" };
                let verb = if resumed { "resuming" } else { "starting" };
                format!(
                    "{verb} {kind} run `{run_id}` of plan `{plan}`: {} to run",
                    crate::counted(steps, "step")
                )
            }
            Event::StepStarted {
                step,
                phase,
                attempt,
            } => {
                if self.quiet || !self.verbose && self.mode == Mode::Bars {
                    return;
                }
                let retry = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("{} {step} [{phase}]{retry}", self.paint("36", "start"))
            }
            Event::StepRetrying {
                step,
                attempt,
                error,
                delay,
            } => {
                if self.quiet {
                    return;
                }
                format!(
                    "{} {step}: attempt {attempt} failed ({error}); retrying in {}",
                    self.paint("33", "retry"),
                    seconds(&delay)
                )
            }
            Event::StepFinished {
                step,
                succeeded: true,
                duration,
                ..
            } => {
                if self.quiet {
                    return;
                }
                format!(
                    "{} {step} in {}",
                    self.paint("32", "   ok"),
                    seconds(&duration)
                )
            }
            Event::StepFinished {
                step,
                duration,
                error,
                log_tail,
                log,
                attempt,
                last,
                ..
            } => {
                // An attempt that is retried has not failed the step: said
                // so, in the retry's colour, before the retry's own line.
                let label = if last {
                    self.paint("31", " FAIL")
                } else {
                    self.paint("33", " fail")
                };
                let mut text = format!(
                    "{label} {step} after {} (attempt {attempt}): {}",
                    seconds(&duration),
                    error.unwrap_or_default()
                );
                if let Some(tail) = log_tail {
                    for line in tail.lines() {
                        text.push_str("\n       | ");
                        text.push_str(line);
                    }
                }
                if let Some(log) = log {
                    text.push_str(&format!("\n       log: {}", log.display()));
                }
                text
            }
            Event::StepSkipped { step, reason, .. } => {
                if self.quiet {
                    return;
                }
                format!("{} {step}: {reason}", self.paint("33", " skip"))
            }
            Event::Progress {
                step,
                done,
                total,
                elapsed,
            } => {
                let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
                let text = format!(
                    "{step}: {} of {} at {}/s",
                    bytes(done as f64),
                    bytes(total as f64),
                    bytes(rate)
                );
                let guard = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(spinner) = guard.as_ref().and_then(|b| b.running.get(&step)) {
                    spinner.set_message(text);
                    return;
                }
                drop(guard);
                // Without bars, one line when the transfer is complete.
                if self.quiet || done < total {
                    return;
                }
                format!("{} {text}", self.paint("36", " data"))
            }
            Event::Paused { step, prompt } => format!(
                "{} at `{step}`: {prompt}\n       approve with `phoenix resume --approve {step}`",
                self.paint("35", "pause")
            ),
            Event::Warning(message) => format!("{}: {message}", self.paint("33", "warning")),
            Event::Info(message) => {
                if self.quiet {
                    return;
                }
                message
            }
            Event::RunFinished {
                run_id,
                result,
                duration,
            } => {
                if let Some(bars) = self.bars.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    for bar in bars.phases.values() {
                        bar.finish();
                    }
                    let _ = bars.multi.clear();
                }
                if self.quiet && result == RunResult::Succeeded {
                    return;
                }
                let painted = match result {
                    RunResult::Succeeded => self.paint("32", "succeeded"),
                    RunResult::Paused => self.paint("35", "paused"),
                    _ => self.paint("31", result.as_str()),
                };
                format!("run `{run_id}` {painted} in {}", seconds(&duration))
            }
        };
        self.line(text);
    }

    /// The bars are hidden for the prompt, not suspended around it: a
    /// suspension holds the display's lock until the closure returns, and an
    /// answer can take all day, while a signal's warning, or any step's line,
    /// waited for that lock on the executor's own thread.
    fn prompting(&self, on: bool) {
        let guard = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bars) = guard.as_ref() {
            if on {
                let _ = bars.multi.clear();
                bars.multi.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                bars.multi
                    .set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            }
        }
    }
}
