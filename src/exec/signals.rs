//! SIGINT and SIGTERM: the first stops the run gracefully, the second at once.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Event, Shared};

/// Watches for signals for as long as the run lives. The first cancels the
/// run's interrupt token: no new step starts, running children get SIGTERM (then
/// SIGKILL after the grace period), the journal is flushed and the lock
/// released. The second kills every child group and exits 130 at once.
pub fn watch(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
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
