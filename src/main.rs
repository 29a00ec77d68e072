use clap::Parser;

use phoenix::cli::{self, Cli};
use phoenix::exit_codes;

/// See Cargo.toml: frees on another thread than the allocation's are common
/// here (records, step results) and cheap with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Until the first step starts: see phoenix::hugepages.
    phoenix::hugepages::suspend();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                exit_codes::USAGE
            } else {
                exit_codes::SUCCESS
            };
            let _ = err.print();
            std::process::exit(code);
        }
    };
    cli::init_logging(&cli.global);
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(err) if cli::json_logs() => {
            // One JSON object, as every other line on stderr: the error and
            // its causes on one line.
            cli::say_error(&phoenix::error_text(&err));
            err.exit_code()
        }
        Err(err) => {
            let mut message = format!("error: {err}");
            for cause in phoenix::error_chain(&err).skip(1) {
                message.push_str(&format!("\n  Caused by: {cause}"));
            }
            phoenix::note!("{message}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}
