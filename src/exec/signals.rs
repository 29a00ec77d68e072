//! SIGINT, SIGTERM and SIGHUP: the first stops the run gracefully, the second
//! at once.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Event, Shared};

/// The signals a run handles: a child resets them before exec (see
/// `spawn::default_signals`), so a handler for any other signal must be
/// added here. SIGHUP (the terminal or the SSH session that started the
/// run went away) stops a run as SIGTERM does: left at its default, it killed
/// Phoenix at once and left the steps running on their own, in process
/// groups of their own, where a resume would start them a second time. It
/// is watched only when Phoenix was not started ignoring it ([`hangup_watched`]).
pub const WATCHED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Whether SIGHUP is watched: not when Phoenix was started ignoring it
/// (`nohup phoenix run …`, to outlive the terminal), which its steps then
/// inherit as exec would leave it. Asked before any handler is installed.
pub fn hangup_watched() -> bool {
    static WATCHED_HANGUP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WATCHED_HANGUP.get_or_init(|| !super::spawn::is_ignored(libc::SIGHUP))
}

/// Watches for signals for as long as the run lives. The first cancels the
/// run's interrupt token: no new step starts, running children get SIGTERM (then
/// SIGKILL after the grace period), the journal is flushed and the lock
/// released. The second kills every child group and exits 130 at once.
pub fn watch(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let hangup = hangup_watched();
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::from_raw(WATCHED[0])),
            signal(SignalKind::from_raw(WATCHED[1])),
        ) else {
            return;
        };
        let mut hangup = hangup
            .then(|| signal(SignalKind::from_raw(WATCHED[2])).ok())
            .flatten();
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
            };
            seen += 1;
            if seen == 1 {
                shared.events.emit(Event::Warning(format!(
                    "{name}: stopping; running steps are being terminated (send it again to kill at once)"
                )));
                shared.journal.append(crate::journal::Record::Interrupted {
                    at: chrono::Utc::now(),
                    signal: name.to_string(),
                });
                shared.interrupt.cancel();
            } else {
                shared.processes.kill_all();
                let _ = shared.journal.flush().await;
                shared.events.emit(Event::Warning(format!(
                    "{name} again: killed every running step"
                )));
                std::process::exit(crate::exit_codes::INTERRUPTED);
            }
        }
    })
}
