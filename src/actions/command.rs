//! `command`: run a program, as an argv or through `/bin/sh -c`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::process::{grace, signal_group};
use crate::exec::spawn::{Child, SpawnRequest};
use crate::exec::{ActionError, StepContext};
use crate::journal::local::create_private;
use crate::journal::record::Outputs;

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["run", "shell", "cwd", "env"];

/// What phoenix gives every step's processes, over the step's own `env`.
const RESERVED_ENV: &[&str] = &[
    "PHOENIX_OUTPUT",
    "PHOENIX_STEP",
    "PHOENIX_RUN_ID",
    "PHOENIX_RUN_DIR",
];

#[derive(Clone, Debug)]
pub enum Program {
    Argv(Vec<Spanned<String>>),
    Shell(Spanned<String>),
}

#[derive(Clone, Debug)]
pub struct CommandSpec {
    pub program: Program,
    pub cwd: Option<Spanned<String>>,
    pub env: BTreeMap<String, Spanned<String>>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<CommandSpec> {
    fields.exactly_one(&["run", "shell"], diags);
    let cwd = fields.string("cwd", diags);
    let env = fields.string_map("env", diags).unwrap_or_default();
    for (key, value) in &env {
        if RESERVED_ENV.contains(&key.as_str()) {
            diags.warning(
                fields.source,
                value.span,
                "reserved-env",
                format!(
                    "`env.{key}` in {}: phoenix sets `{key}` for every step, so this value is not used",
                    fields.what
                ),
            );
        }
    }
    let program = if fields.contains("run") {
        Program::Argv(fields.string_list("run", true, diags)?.value)
    } else {
        Program::Shell(fields.string("shell", diags)?)
    };
    Some(CommandSpec { program, cwd, env })
}

/// Runs the program in a process group of its own, its output captured in the
/// attempt's log (through the secret masker when the plan has secrets), its
/// `PHOENIX_OUTPUT` lines read back as outputs.
pub async fn run(spec: &CommandSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let (program, args) = match &spec.program {
        Program::Argv(argv) => {
            let mut rendered = Vec::with_capacity(argv.len());
            for arg in argv {
                rendered.push(ctx.render(arg)?);
            }
            let program = rendered.remove(0);
            (program, rendered)
        }
        Program::Shell(script) => (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), ctx.render(script)?],
        ),
    };
    let cwd = match &spec.cwd {
        Some(cwd) => ctx.path(cwd)?,
        None => ctx.shared.plan.dir.clone(),
    };
    let mut step_env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        step_env.push((key.as_str(), ctx.render(value)?));
    }
    let output_name = format!("{}.{}.out", ctx.step.id.value, ctx.attempt);
    let output_file = ctx.shared.run.tmp.join(&output_name);
    let env = ctx.shared.run.environment(
        ctx.step.id.as_str(),
        step_env.iter().map(|(key, value)| (*key, value.as_str())),
        &output_file,
    );
    // Output goes through one pipe (stdout and stderr interleaved as written),
    // masked, into a log file created on the first byte: most steps print nothing,
    // and a file per silent attempt would cost an inode each.
    let io_error = |action: &'static str| {
        let path = ctx.log_path.clone();
        move |source| ActionError::Io {
            action,
            path,
            source,
        }
    };
    let (reader, writer) = std::io::pipe().map_err(io_error("create a pipe for"))?;
    // Registered before the child starts: nothing can fail after it has. The
    // read end is known to be a new pipe's, open for reading only: one
    // `fcntl` makes it non-blocking, where `from_owned_fd` would check all
    // that again with two more system calls on every step.
    let reader = std::os::fd::OwnedFd::from(reader);
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|errno| io_error("read the output of")(errno.into()))?;
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(reader)
        .map_err(io_error("read the output of"))?;
    let spawn_error = |source: std::io::Error| {
        if !cwd.is_dir() {
            return ActionError::Io {
                action: "change to the step's directory (`cwd`)",
                path: cwd.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            };
        }
        ActionError::Spawn {
            program: program.clone(),
            source: with_the_way_out(source, &program, &cwd),
        }
    };
    let spawner = ctx.shared.spawner().map_err(spawn_error)?;
    // The watch must begin before the first child can write its file.
    let output_files = ctx.shared.output_files();
    let mut child = spawner
        .spawn(&SpawnRequest {
            program: OsStr::new(&program),
            args: &args,
            env: &env,
            cwd: &cwd,
            output: writer.as_fd(),
        })
        .map_err(spawn_error)?;
    // The child holds the pipe's write end: close ours so the reader sees EOF.
    drop(writer);
    let pgid = child.id();
    ctx.shared.processes.insert(pgid);
    // Copied in this task while the child runs: no task of its own per step.
    let mut copier = Box::pin(copy_masked(
        receiver,
        ctx.log_path.clone(),
        std::sync::Arc::clone(&ctx.shared.masker),
    ));
    // A short step ends as its output does: the pipe closes as the process
    // exits, and the child is reaped then, with no pidfd to register with
    // tokio (system calls and a wake-up saved on each of thousands of short
    // steps). The pipe closes a few microseconds before the child can be
    // reaped: if it cannot be yet, this thread waits for that, up to
    // `EXITING`. A step still running after `EARLY`, or one whose output
    // outlives it (a daemon it started keeps the pipe, or it closed its
    // output and runs on), is waited for through its pidfd.
    const EARLY: Duration = Duration::from_millis(100);
    const EXITING: Duration = Duration::from_millis(1);
    // `Some` once the copy is over, with how the log ended.
    let mut copied: Option<LogEnd> = None;
    let mut early = None;
    tokio::select! {
        end = &mut copier => {
            copied = Some(end);
            early = child.wait_exiting(EXITING).ok().flatten();
        }
        _ = tokio::time::sleep(EARLY) => {}
        _ = ctx.cancel.cancelled() => {}
    }
    let status = if let Some(status) = early {
        Ok(status)
    } else {
        let exited = async {
            tokio::select! {
                status = child.wait() => status,
                _ = ctx.cancel.cancelled() => {
                    terminate(pgid, &mut child).await;
                    child.wait().await
                }
            }
        };
        tokio::pin!(exited);
        loop {
            tokio::select! {
                status = &mut exited => break status,
                end = &mut copier, if copied.is_none() => copied = Some(end),
            }
        }
    };
    ctx.shared.processes.remove(pgid);
    let log = match copied {
        Some(end) => end,
        None => finish_copy(copier).await,
    };
    if let Some(lost) = log.lost {
        ctx.shared.events.emit(crate::exec::Event::Warning(format!(
            "step `{}`: {}",
            ctx.step.id.value,
            ctx.shared.describe(&lost)
        )));
    }
    if log.left_out > 0 {
        ctx.shared.events.emit(crate::exec::Event::Warning(format!(
            "step `{}`: its output passed {}: {} of it were left out of the middle of its log `{}` (PHOENIX_LOG_LIMIT sets how much is kept)",
            ctx.step.id.value,
            crate::report::terminal::bytes(log_limit() as f64),
            crate::report::terminal::bytes(log.left_out as f64),
            ctx.log_path.display()
        )));
    }
    let status = status.map_err(|source| ActionError::Io {
        action: "wait for",
        path: ctx.log_path.clone(),
        source,
    })?;
    let outputs = if output_files.take(OsStr::new(&output_name)) {
        read_outputs(&output_file).map(|(outputs, problems)| {
            for problem in problems {
                ctx.shared.events.emit(crate::exec::Event::Warning(format!(
                    "step `{}`: `PHOENIX_OUTPUT` {problem}",
                    ctx.step.id.value
                )));
            }
            outputs
        })
    } else {
        Ok(Outputs::new())
    };
    if ctx.cancel.is_cancelled() {
        return Err(ActionError::Interrupted);
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => outputs.map_err(|too_large| ActionError::Outputs(too_large.to_string())),
        (Some(code), _) => Err(ActionError::Exit(code)),
        (None, Some(signal)) => Err(ActionError::Signal(
            nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| signal.to_string()),
        )),
        (None, None) => Err(ActionError::Exit(-1)),
    }
}

/// The two mistakes a program that cannot be started is most often, said
/// with what to write instead; any other error as it is.
fn with_the_way_out(source: std::io::Error, program: &str, cwd: &Path) -> std::io::Error {
    use std::io::ErrorKind;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::metadata(cwd.join(program))
        .ok()
        .filter(|m| m.is_file());
    match source.kind() {
        // `run = ["deploy.sh"]` looks the name up in PATH, as a shell does.
        ErrorKind::NotFound if !program.contains('/') && !program.is_empty() && file.is_some() => {
            std::io::Error::new(
                ErrorKind::NotFound,
                format!("not found in PATH; the file in the step's directory is `./{program}`"),
            )
        }
        ErrorKind::PermissionDenied
            if program.contains('/') && file.is_some_and(|m| m.permissions().mode() & 0o111 == 0) =>
        {
            std::io::Error::new(
                ErrorKind::PermissionDenied,
                "the file is not executable: `chmod +x` it, or name its interpreter first (`run = [\"sh\", …]`)",
            )
        }
        _ => source,
    }
}

/// SIGTERM to the group, then SIGKILL if it is still there after the grace period.
async fn terminate(pgid: i32, child: &mut Child) {
    use nix::sys::signal::Signal;
    signal_group(pgid, Signal::SIGTERM);
    // A stopped process acts on SIGTERM only once it runs again: without
    // this, it would sit out the whole grace period.
    signal_group(pgid, Signal::SIGCONT);
    if tokio::time::timeout(grace(), child.wait()).await.is_err() {
        signal_group(pgid, Signal::SIGKILL);
    }
    // Grandchildren may outlive the leader: the group gets SIGKILL regardless.
    signal_group(pgid, Signal::SIGKILL);
}

/// The most a `PHOENIX_OUTPUT` file may hold. Outputs are values later steps
/// read (ids, hosts, paths), and each is kept in the journal, the run's
/// memory and its report: a script that sent a command's whole output there
/// (`>> "$PHOENIX_OUTPUT"` on the wrong line) would put a dump in each.
pub(crate) const OUTPUTS_LIMIT: u64 = 1024 * 1024;

/// `SIZE, more than the 1 MiB outputs may take (…)`: what a step's outputs
/// over [`OUTPUTS_LIMIT`] are said as, by every action that gives them.
pub(crate) fn over_the_limit(size: u64) -> String {
    format!(
        "{}, more than the 1 MiB outputs may take (they are values later steps read: ids, hosts, paths)",
        crate::report::terminal::bytes(size as f64)
    )
}

/// A `PHOENIX_OUTPUT` file over [`OUTPUTS_LIMIT`]: its size, as found.
#[derive(Debug)]
pub(crate) struct TooLarge(u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`PHOENIX_OUTPUT` holds {}; write large data to a file and give its path as the output",
            over_the_limit(self.0)
        )
    }
}

/// `key=value` lines of the `PHOENIX_OUTPUT` file (blank lines and `#`
/// comments aside), and what was wrong with the rest: a line that is not
/// `key=value` is left out and named by its number (not its text, which may
/// hold a secret), bytes that are not UTF-8 are replaced. Either used to be
/// dropped without a word, and a dependent then failed on a missing output.
/// A file over [`OUTPUTS_LIMIT`] is not read at all. The file is removed
/// once read, as it may hold secrets.
pub(crate) fn read_outputs(path: &Path) -> Result<(Outputs, Vec<String>), TooLarge> {
    use std::io::Read;
    let mut problems = Vec::new();
    let Ok(file) = std::fs::File::open(path) else {
        return Ok((Outputs::new(), problems));
    };
    let _ = std::fs::remove_file(path);
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Read to one byte past the limit at most: the file may still grow (a
    // process the step left behind writes on).
    let mut bytes = Vec::new();
    let _ = file.take(OUTPUTS_LIMIT + 1).read_to_end(&mut bytes);
    if size.max(bytes.len() as u64) > OUTPUTS_LIMIT {
        return Err(TooLarge(size.max(bytes.len() as u64)));
    }
    let text = String::from_utf8_lossy(&bytes);
    if let std::borrow::Cow::Owned(_) = text {
        problems.push("holds bytes that are not UTF-8: each was replaced by U+FFFD".into());
    }
    let mut outputs = Outputs::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                outputs.insert(key.trim().to_string(), value.to_string());
            }
            _ => problems.push(format!("line {} is not `key=value`: left out", n + 1)),
        }
    }
    Ok((outputs, problems))
}

/// Lets the copy of an exited process's output finish: a daemon it started
/// may keep the pipe open, and then the output goes on into the log in the
/// background (closing the pipe would kill the daemon with SIGPIPE). How
/// the log ended, if the copy finished.
pub(crate) async fn finish_copy(
    mut copier: std::pin::Pin<Box<impl std::future::Future<Output = LogEnd> + Send + 'static>>,
) -> LogEnd {
    match tokio::time::timeout(Duration::from_millis(500), &mut copier).await {
        Ok(end) => end,
        Err(_) => {
            tokio::spawn(copier);
            LogEnd::default()
        }
    }
}

/// Why a step's log is incomplete: it could not be created or written (a
/// full disk, most often). The step's own result does not depend on it, but
/// whoever reads the log must know that it stops short.
#[derive(Debug, thiserror::Error)]
#[error("its log `{}` is incomplete: output was lost", path.display())]
pub struct LogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// How a step's log ended: what could not be written, and how much of the
/// output was left out of its middle (see [`log_limit`]).
#[derive(Debug, Default)]
pub struct LogEnd {
    pub lost: Option<LogError>,
    pub left_out: u64,
}

/// How much of a step's output its log keeps from the start:
/// `PHOENIX_LOG_LIMIT` (a size such as `512MiB`), 1 GiB by default. Past
/// it, only the last [`LOG_TAIL`] bytes are kept, after a line saying how
/// much was left out: a step stuck printing the same error in a loop must
/// not fill the disk the journal, and perhaps the restored data, live on.
pub fn log_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(crate::settings::log_limit)
}

/// What a log keeps of the end of an output longer than [`log_limit`]: the
/// end is what tells why a step failed.
pub const LOG_TAIL: usize = 1 << 20;

/// A step's log, created on its first byte.
struct Log {
    path: PathBuf,
    file: Option<std::fs::File>,
    lost: Option<std::io::Error>,
    limit: u64,
    written: u64,
    /// Past the limit: the latest output, at most [`LOG_TAIL`] bytes.
    tail: std::collections::VecDeque<u8>,
    left_out: u64,
    /// Whether what the file holds ends a line.
    ends_line: bool,
}

impl Log {
    fn new(path: PathBuf, limit: u64) -> Log {
        Log {
            path,
            file: None,
            lost: None,
            limit,
            written: 0,
            tail: std::collections::VecDeque::new(),
            left_out: 0,
            ends_line: true,
        }
    }

    /// Output, already masked.
    fn write(&mut self, text: &[u8]) {
        if self.tail.is_empty() && self.written + text.len() as u64 <= self.limit {
            self.written += text.len() as u64;
            self.append(text);
            return;
        }
        self.tail.extend(text);
        if self.tail.len() > LOG_TAIL {
            let excess = self.tail.len() - LOG_TAIL;
            self.tail.drain(..excess);
            self.left_out += excess as u64;
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        use std::io::Write;
        // A silent step has no log: a file per attempt would cost an inode.
        if self.lost.is_some() || bytes.is_empty() {
            return;
        }
        if self.file.is_none() {
            match create_private(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(error) => {
                    self.lost = Some(error);
                    return;
                }
            }
        }
        if let Some(Err(error)) = self.file.as_mut().map(|file| file.write_all(bytes)) {
            self.lost = Some(error);
        }
        if let Some(last) = bytes.last() {
            self.ends_line = *last == b'\n';
        }
    }

    fn finish(mut self) -> LogEnd {
        let mut tail = std::mem::take(&mut self.tail);
        if self.left_out > 0 {
            // From the first whole line on.
            if let Some(newline) = tail.iter().position(|b| *b == b'\n') {
                tail.drain(..=newline);
                self.left_out += newline as u64 + 1;
            }
            let bytes = |n: u64| crate::report::terminal::bytes(n as f64);
            let marker = format!(
                "{}[phoenix: {} of output left out here; the log keeps the first {} (PHOENIX_LOG_LIMIT) and the last {}]\n",
                if self.ends_line { "" } else { "\n" },
                bytes(self.left_out),
                bytes(self.limit),
                bytes(LOG_TAIL as u64)
            );
            self.append(marker.as_bytes());
        }
        let (first, second) = tail.as_slices();
        self.append(first);
        self.append(second);
        LogEnd {
            lost: self.lost.map(|source| LogError {
                path: self.path,
                source,
            }),
            left_out: self.left_out,
        }
    }
}

/// Copies a child's output to its log, masking secrets. Text is held back
/// until a line ends (or a long line fills the buffer), and is never cut
/// inside a secret or before one the next read may complete
/// ([`crate::exec::secrets::Masker::safe_cut`]): a secret split between two
/// writes would be masked in neither. The output is read to its end even
/// when the log cannot be written or is past [`log_limit`] (a step must not
/// block on a full pipe for it).
pub(crate) async fn copy_masked(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    path: PathBuf,
    masker: std::sync::Arc<crate::exec::secrets::Masker>,
) -> LogEnd {
    use tokio::io::AsyncReadExt;
    const LIMIT: usize = 64 * 1024;
    let mut log = Log::new(path, log_limit());
    let mut pending: Vec<u8> = Vec::new();
    let write = |log: &mut Log, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        log.write(masker.mask(&text).as_bytes());
    };
    loop {
        // Read straight into what is held back: no chunk buffer to zero on
        // every step.
        pending.reserve(8 * 1024);
        match stream.read_buf(&mut pending).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let cut = match pending.iter().rposition(|b| *b == b'\n') {
            Some(newline) => newline + 1,
            None if pending.len() > LIMIT => pending.len(),
            None => continue,
        };
        // Never inside a secret, nor before one the next read may complete.
        let cut = masker.safe_cut(&pending, cut);
        if cut == 0 {
            continue;
        }
        write(&mut log, &pending[..cut]);
        pending.drain(..cut);
    }
    if !pending.is_empty() {
        write(&mut log, &pending);
    }
    log.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines `first..=last`, one number a line, as `seq` prints them.
    fn lines(first: usize, last: usize) -> String {
        (first..=last).map(|n| format!("{n}\n")).collect()
    }

    fn logged(limit: u64, output: &str) -> (String, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.1.log");
        let mut log = Log::new(path.clone(), limit);
        // In whole lines, as copy_masked hands them over.
        for line in output.split_inclusive('\n') {
            log.write(line.as_bytes());
        }
        let end = log.finish();
        assert!(end.lost.is_none());
        (std::fs::read_to_string(&path).unwrap(), end.left_out)
    }

    #[test]
    fn a_silent_step_has_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.1.log");
        let end = Log::new(path.clone(), 1 << 20).finish();
        assert!(end.lost.is_none() && end.left_out == 0);
        assert!(!path.exists());
    }

    #[test]
    fn a_log_keeps_all_of_an_output_within_the_limit_and_its_tail() {
        let short = lines(1, 1000);
        assert_eq!(logged(1 << 20, &short), (short.clone(), 0));
        // Past the limit by less than the tail: nothing is left out.
        let past = lines(1, 100_000);
        assert!(past.len() < 10_000 + LOG_TAIL);
        assert_eq!(logged(10_000, &past), (past.clone(), 0));
    }

    #[test]
    fn a_log_leaves_out_the_middle_of_a_long_output_and_says_so() {
        let output = lines(1, 400_000);
        let (log, left_out) = logged(100 * 1024, &output);
        let (head, rest) = log.split_once("[phoenix: ").unwrap();
        let (marker, tail) = rest.split_once('\n').unwrap();
        assert!(output.starts_with(head) && head.ends_with('\n'));
        assert!(head.len() <= 100 * 1024);
        assert!(
            marker.ends_with("of output left out here; the log keeps the first 100.0 KiB (PHOENIX_LOG_LIMIT) and the last 1.0 MiB]"),
            "{marker}"
        );
        // The tail starts at a whole line, ends the output, and nothing
        // else is missing.
        assert!(output.ends_with(tail) && tail.len() <= LOG_TAIL);
        assert!(tail.starts_with(|c: char| c.is_ascii_digit()));
        let skipped = &output[head.len()..output.len() - tail.len()];
        assert!(skipped.ends_with('\n'));
        assert_eq!(left_out, skipped.len() as u64);
    }
}
