//! Phoenix: a disaster-recovery rebuild orchestrator.
//!
//! # Layout
//! A plan flows one way through the tree:
//!
//! - [`plan`]: plan text -> checked [`plan::Plan`], with diagnostics that point at
//!   `FILE:LINE:COL`.
//! - [`graph`]: the step DAG: cycles, ancestors, waves, critical path.
//! - [`actions`]: what each kind of step does, one file per action.
//! - [`cli`]: the `phoenix` command line; `main.rs` only maps its result to an
//!   exit code ([`exit_codes`]).

/// `eprintln!` that shrugs off a closed stderr (`phoenix run … 2>&1 | head`):
/// `eprintln!` panics there, and a message nobody can read is not worth
/// stopping a rebuild for.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::stderr_line(::std::format!($($arg)*))
    };
}

/// Writes `line` and its newline to stderr in one `write`. Stderr is not
/// buffered: `writeln!` makes two, and another process writing to the same
/// terminal or CI log in between splits the line. A closed stderr is
/// shrugged off, as in [`note!`].
pub fn stderr_line(mut line: String) {
    use std::io::Write as _;
    if QUESTION_OPEN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        line.insert(0, '\n');
    }
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Whether stderr's last write was a question still waiting for its answer,
/// the cursor at the end of its line: the next line written starts a new one
/// (a signal's warning, or another step's line, is not printed after the
/// question's text).
static QUESTION_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `question` to stderr without a newline, for an answer typed on the
/// same line.
pub fn stderr_question(question: &str) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    // Not `eprint!`: it panics when stderr is a closed pipe.
    let _ = stderr.write_all(question.as_bytes());
    let _ = stderr.flush();
    QUESTION_OPEN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The question was answered: the person's Enter ended its line.
pub fn question_answered() {
    QUESTION_OPEN.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// The question was left unanswered: its line is ended unless something
/// written since has ended it already.
pub fn question_abandoned() {
    if QUESTION_OPEN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        stderr_line(String::new());
    }
}

/// How many CPUs this process may use (its affinity and cgroup quota; one if
/// that cannot be read). Read once: `std::thread::available_parallelism`
/// reads the cgroup files again on every call, and a run asks twice before
/// its first step (the plan's parse threads, the runtime's workers).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `error`, then each of its causes in turn.
pub fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'a),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'a)> {
    std::iter::successors(Some(error), |e| {
        e.source().map(|s| s as &(dyn std::error::Error + 'a))
    })
}

/// `error` and its causes on one line, each after a `: `.
pub fn error_text(error: &dyn std::error::Error) -> String {
    error_chain(error)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Frees `value` on a thread of its own, so that the caller does not wait
/// for it. A run's largest structures (a 10,000-step plan, the journal it
/// folded, its report) take milliseconds to free, just before the process
/// exits, which does not wait for that thread. Should no thread start,
/// `value` is freed here.
pub fn drop_later<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// `n` and the noun, plural unless `n` is 1: "1 step", "3 steps".
pub fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `println!` for a command's data, shrugging off a closed stdout
/// (`phoenix history | head -1`) instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// [`out!`] without the newline.
#[macro_export]
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod actions;
pub mod cli;
pub mod exec;
pub mod exit_codes;
pub mod graph;
pub mod hugepages;
pub mod journal;
pub mod plan;
pub mod report;
pub mod session;
pub mod settings;
pub mod stores;
pub mod timestamp;
pub mod unpack;
