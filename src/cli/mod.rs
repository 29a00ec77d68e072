//! The `phoenix` command line: clap definitions and one module per command.
//!
//! Commands return a [`CliResult`]: an exit code on success paths (a failed
//! validation is a result, not an error), or a [`CliError`] that `main` renders
//! once and maps to its exit code.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit_codes;
use crate::plan::diagnostic::Diagnostics;
use crate::plan::load::{LoadError, LoadOptions, Loaded};

mod backups;
mod graph;
mod history;
mod logs;
mod plan;
mod report;
mod resume;
mod run;
mod status;
mod unlock;
mod validate;

#[derive(Parser, Debug)]
#[command(
    name = "phoenix",
    version,
    about = "Rebuild infrastructure from one checkpointed plan: provision, configure, restore."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Where runs are kept: a directory, or s3://BUCKET/PREFIX.
    #[arg(long, global = true, env = "PHOENIX_STATE", default_value = ".phoenix")]
    pub state: String,
    /// How log lines on stderr are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check plans without touching anything: no network, credentials or secrets.
    Validate(validate::ValidateArgs),
    /// Show what a run would do: waves, critical path, predicted RTO.
    Plan(plan::PlanArgs),
    /// Print the step graph, grouped by phase.
    Graph(graph::GraphArgs),
    /// Preflight: the backup each restore step would pick now, its age and digest.
    Backups(backups::BackupsArgs),
    /// Execute a plan, checkpointing every step.
    Run(run::RunArgs),
    /// Continue an interrupted, failed or paused run.
    Resume(resume::ResumeArgs),
    /// Where a run stands.
    Status(status::StatusArgs),
    /// What a step printed (secrets masked); --follow prints it as it runs.
    Logs(logs::LogsArgs),
    /// A run's report: Markdown, JSON, JUnit or HTML.
    Report(report::ReportArgs),
    /// Every run in the state: plan, drill or recovery, result, RTO, RPO.
    History(history::HistoryArgs),
    /// Remove a lock left by a run that is gone.
    Unlock(unlock::UnlockArgs),
}

/// `--vars` and `--var`, shared by every command that loads a plan.
#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// A TOML file of var values (repeatable; later files win).
    #[arg(long = "vars", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
    /// One var value, KEY=VALUE (repeatable; wins over --vars).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
}

impl VarArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            vars_files: self.vars_files.clone(),
            vars: self.vars.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write `{}`", .path.display())]
    Output {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
}

impl From<crate::journal::StateError> for CliError {
    fn from(error: crate::journal::StateError) -> Self {
        CliError::Session(error.into())
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Load(_) | CliError::Usage(_) => exit_codes::USAGE,
            CliError::Output { .. } => exit_codes::USAGE,
            CliError::Session(error) => {
                use crate::session::SessionError as E;
                match error {
                    E::Lock(
                        crate::journal::LockError::Held(_)
                        | crate::journal::LockError::HeldUnknown
                        | crate::journal::LockError::LiveLease(_)
                        | crate::journal::LockError::Lost(_),
                    ) => exit_codes::LOCKED,
                    E::Usage(_)
                    | E::NothingToResume(_)
                    | E::State(
                        crate::journal::StateError::NoRun(_)
                        | crate::journal::StateError::NoState(_)
                        | crate::journal::StateError::Unsupported(_)
                        | crate::journal::StateError::RunExists(_)
                        | crate::journal::StateError::Location { .. },
                    ) => exit_codes::USAGE,
                    _ => exit_codes::FAILURE,
                }
            }
        }
    }
}

pub type CliResult = Result<i32, CliError>;

pub fn run(cli: Cli) -> CliResult {
    for problem in crate::settings::problems() {
        say_warning(&problem);
    }
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Backups(args) => backups::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Resume(args) => resume::run(&cli.global, args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Report(args) => report::run(&cli.global, args),
        Command::History(args) => history::run(&cli.global, args),
        Command::Unlock(args) => unlock::run(&cli.global, args),
    }
}

/// Whether stderr is a terminal and colour is welcome there.
pub fn stderr_style() -> (bool, bool) {
    let terminal = std::io::stderr().is_terminal();
    (
        terminal,
        terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    )
}

/// Prints diagnostics to stderr, one `FILE:LINE:COL: severity: message` each.
pub fn print_diagnostics(diags: Diagnostics, quiet: bool) {
    use crate::plan::diagnostic::Severity;
    let (snippet, color) = stderr_style();
    for diag in diags.sorted() {
        if quiet && diag.severity == Severity::Warning {
            continue;
        }
        if json_logs() {
            let d = diag.to_json();
            match d.severity {
                Severity::Error => {
                    tracing::error!(target: "phoenix::events", event = "diagnostic", file = %d.file, line = d.line, column = d.column, code = d.code, message = d.message)
                }
                Severity::Warning => {
                    tracing::warn!(target: "phoenix::events", event = "diagnostic", file = %d.file, line = d.line, column = d.column, code = d.code, message = d.message)
                }
            }
        } else {
            crate::note!("{}", diag.render(snippet, color));
        }
    }
}

/// Whether stderr carries one JSON object a line (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn json_logs() -> bool {
    JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// An error on stderr: `error: MESSAGE`, or with `--log-format json` an
/// `error` event like every other line there.
pub fn say_error(message: &str) {
    if json_logs() {
        tracing::error!(target: "phoenix::events", event = "error", message);
    } else {
        crate::note!("error: {message}");
    }
}

/// A warning on stderr, as [`say_error`] says an error.
pub fn say_warning(message: &str) {
    if json_logs() {
        tracing::warn!(target: "phoenix::events", event = "warning", message);
    } else {
        crate::note!("warning: {message}");
    }
}

/// What a command did, on stderr, as [`say_error`] says an error.
pub fn say_info(message: &str) {
    if json_logs() {
        tracing::info!(target: "phoenix::events", event = "info", message);
    } else {
        crate::note!("{message}");
    }
}

/// Loads a plan for a command that needs a valid one: prints its diagnostics and
/// returns `None` when it has errors (the caller exits 1).
pub fn load_valid(path: &std::path::Path, vars: &VarArgs) -> Result<Option<Loaded>, CliError> {
    let mut loaded = crate::plan::load(path, &vars.load_options())?;
    let diagnostics = std::mem::take(&mut loaded.diagnostics);
    let failed = diagnostics.has_errors();
    // Warnings are `validate`'s business; other commands show only errors.
    if failed {
        print_diagnostics(diagnostics, true);
        say_error(&format!(
            "`{}` is not a valid plan; run `phoenix validate` for details",
            path.display()
        ));
        return Ok(None);
    }
    Ok(Some(loaded))
}

/// Opens the state named by `--state` (or `PHOENIX_STATE`), creating it.
pub fn open_state(global: &GlobalArgs) -> Result<Box<dyn crate::journal::StateStore>, CliError> {
    Ok(crate::journal::open(&global.state, true)?)
}

/// Opens an existing state, for the commands that only read one.
pub fn existing_state(
    global: &GlobalArgs,
) -> Result<Box<dyn crate::journal::StateStore>, CliError> {
    Ok(crate::journal::open(&global.state, false)?)
}

/// Whether a person can answer a prompt: both stdin and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The terminal view for a run, as the global flags ask.
pub fn terminal(global: &GlobalArgs) -> std::sync::Arc<dyn crate::exec::EventSink> {
    use crate::report::terminal::{Mode, Terminal};
    let (tty, color) = stderr_style();
    let mode = match (global.log_format, tty) {
        (LogFormat::Json, _) => Mode::Json,
        (LogFormat::Text, true) => Mode::Bars,
        (LogFormat::Text, false) => Mode::Lines,
    };
    std::sync::Arc::new(Terminal::new(mode, global.quiet, global.verbose > 0, color))
}

/// The exit code of a finished session, after saying where its state is.
pub fn exit_code_of(end: &crate::session::SessionEnd, global: &GlobalArgs) -> i32 {
    use crate::journal::record::RunResult;
    let resume =
        (end.result != RunResult::Succeeded).then(|| format!("phoenix resume {}", end.run_id));
    if global.log_format == LogFormat::Json {
        // Every line on stderr a JSON object, for whatever collects them.
        tracing::info!(
            target: "phoenix::events",
            event = "run_summary",
            run_id = %end.run_id,
            result = end.result.as_str(),
            state = %end.location,
            report = end.report_written.then(|| format!("{}/report.json", end.location)),
            resume = resume.as_deref(),
        );
    } else if !global.quiet || end.result != RunResult::Succeeded {
        crate::note!("state: {}", end.location);
        if end.report_written {
            crate::note!(
                "report: {}/report.json (HTML: phoenix report {} --format html -o report.html)",
                end.location,
                end.run_id
            );
        } else {
            crate::note!(
                "report: not written (above); `phoenix report {}` makes it from the journal",
                end.run_id
            );
        }
        if let Some(resume) = &resume {
            crate::note!("continue with: {resume}");
        }
    }
    match end.result {
        RunResult::Succeeded => exit_codes::SUCCESS,
        RunResult::Failed => exit_codes::FAILURE,
        RunResult::Paused => exit_codes::PAUSED,
        RunResult::Interrupted => exit_codes::INTERRUPTED,
    }
}

/// The plan a run executed, from the copy in the state, for step order and
/// phases in status and reports.
pub fn run_plan(
    state: &dyn crate::journal::StateStore,
    header: &crate::journal::record::Header,
    view: &crate::journal::reader::RunView,
) -> Option<crate::plan::Plan> {
    let text = state.read_plan(&header.run_id).ok()?;
    let source =
        crate::plan::source::SourceFile::new(state.run_dir(&header.run_id).join("plan.toml"), text);
    let overrides = crate::plan::load::overrides_from_values(&header.vars);
    crate::plan::load::load_source(source, view.plan_dir.clone().into(), overrides).plan
}

/// Logging: with `--log-format json`, every event as one JSON object a line on
/// stderr (run events at info, progress at debug with `-v`); with text, only
/// the library's own diagnostics, warnings by default, more with `-v`.
/// `RUST_LOG` overrides the levels.
pub fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    // The AWS SDK's own warnings (an instance-metadata probe that failed on
    // a machine that is not EC2) repeat, in kilobytes, what Phoenix says of
    // the same failure in a line: shown with `-v` only.
    let default = match (global.log_format, global.quiet, global.verbose) {
        (_, true, _) => "error",
        (LogFormat::Json, false, 0) => "info,aws_config=error,aws_smithy_runtime=error",
        (LogFormat::Json, false, _) => "debug",
        (LogFormat::Text, false, 0) => {
            "warn,phoenix::events=off,aws_config=error,aws_smithy_runtime=error"
        }
        (LogFormat::Text, false, _) => "debug,phoenix::events=off",
    };
    JSON_LOGS.store(
        global.log_format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A closed stderr (`phoenix run … 2>&1 | head`) must not stop a rebuild:
    // the subscriber's own report of a failed write goes through `eprintln!`,
    // which panics on a broken pipe, in whichever task logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match global.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .without_time()
            .with_target(false)
            .with_ansi(stderr_style().1)
            .try_init(),
    };
}

/// The run a command names, else the newest in the state.
pub fn run_or_newest(
    state: &dyn crate::journal::StateStore,
    run_id: Option<String>,
) -> Result<String, CliError> {
    match run_id {
        Some(id) => Ok(id),
        None => crate::session::newest(state)?
            .ok_or_else(|| CliError::Usage(format!("no runs in `{}`", state.describe()))),
    }
}
