//! SIGINT, SIGTERM and SIGHUP: the first stops the run gracefully, the second
//! at once.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Event, Shared};

/// The signals a run handles, each with its name: a child resets them
/// before exec (see `spawn::default_signals`), so a handler for any other
/// signal must be added here. SIGHUP (the terminal or the SSH session that
/// started the run went away) stops a run as SIGTERM does: left at its
/// default, it killed Phoenix at once and left the steps running on their
/// own, in process groups of their own, where a resume would start them a
/// second time. It is left out when Phoenix was started ignoring it (`nohup
/// phoenix run …`, to outlive the terminal), which its steps then inherit as
/// exec would leave it; asked once, before any handler is installed.
pub fn watched() -> impl Iterator<Item = (libc::c_int, &'static str)> {
    static HANGUP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let hangup = *HANGUP.get_or_init(|| !super::spawn::is_ignored(libc::SIGHUP));
    [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")]
        .into_iter()
        .chain(hangup.then_some((libc::SIGHUP, "SIGHUP")))
}

/// Watches for signals for as long as the run lives. The first cancels the
/// run's interrupt token: no new step starts, running children get SIGTERM (then
/// SIGKILL after the grace period), the journal is flushed and the lock
/// released. The second kills every child group and exits 130 at once.
pub fn watch(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let watched: Vec<_> = watched().collect();
    tokio::spawn(async move {
        let Ok(mut streams) = watched
            .into_iter()
            .map(|(number, name)| Ok((signal(SignalKind::from_raw(number))?, name)))
            .collect::<std::io::Result<Vec<_>>>()
        else {
            return;
        };
        let mut seen = 0;
        loop {
            // Whichever signal comes first.
            let name = std::future::poll_fn(|cx| {
                for (stream, name) in &mut streams {
                    if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                        return std::task::Poll::Ready(*name);
                    }
                }
                std::task::Poll::Pending
            })
            .await;
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
