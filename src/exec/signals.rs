//! SIGINT and SIGTERM: the first stops the run gracefully, the second at once.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Event, Shared};

/// The signals a run handles: a child resets them before exec (see
/// `spawn::default_signals`), so a handler for any other signal must be
/// added here.
pub const WATCHED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Watches for signals for as long as the run lives. The first cancels the
/// run's interrupt token: no new step starts, running children get SIGTERM (then
/// SIGKILL after the grace period), the journal is flushed and the lock
/// released. The second kills every child group and exits 130 at once.
pub fn watch(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::from_raw(WATCHED[0])),
            signal(SignalKind::from_raw(WATCHED[1])),
        ) else {
            return;
        };
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
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
