//! `wait`: block until a TCP port accepts or a path exists.

use std::time::Duration;

use crate::exec::{ActionError, StepContext};
use crate::journal::record::Outputs;

use crate::plan::diagnostic::Diagnostics;
use crate::plan::fields::Fields;
use crate::plan::interpolate::has_expressions;
use crate::plan::source::Spanned;

pub const FIELDS: &[&str] = &["tcp", "path", "until"];

#[derive(Clone, Debug)]
pub enum WaitTarget {
    Tcp(Spanned<String>),
    Path(Spanned<String>),
}

#[derive(Clone, Debug)]
pub struct WaitSpec {
    pub target: WaitTarget,
    pub until: Option<Duration>,
}

pub fn parse(fields: &Fields<'_, '_>, diags: &mut Diagnostics) -> Option<WaitSpec> {
    fields.exactly_one(&["tcp", "path"], diags);
    let until = fields.duration("until", diags).map(|d| d.value);
    let target = if let Some(tcp) = fields.string("tcp", diags) {
        if !has_expressions(&tcp) && parse_host_port(&tcp).is_none() {
            diags.error(
                fields.source,
                tcp.span,
                "invalid-value",
                format!(
                    "`tcp` in {} must be `host:port`, found `{}`",
                    fields.what, tcp.value
                ),
            );
            return None;
        }
        WaitTarget::Tcp(tcp)
    } else {
        WaitTarget::Path(fields.string("path", diags)?)
    };
    Some(WaitSpec { target, until })
}

/// `host:port` or `[v6]:port`, with a port from 1 to 65535.
pub fn parse_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then_some((host, port))
}

/// Polls until the target is there, `until` runs out, or the step is cancelled.
/// The last try is made as `until` runs out, not up to a poll interval after:
/// "not ready after 2m" means two minutes, whatever the interval had grown to.
pub async fn run(spec: &WaitSpec, ctx: &StepContext<'_>) -> Result<Outputs, ActionError> {
    let started = tokio::time::Instant::now();
    let left = || {
        spec.until
            .map(|until| until.saturating_sub(started.elapsed()))
    };
    // Poll often at first, then back off: a port that is not up in seconds is
    // usually minutes away.
    let mut poll = Duration::from_millis(100);
    let (target, describe) = match &spec.target {
        WaitTarget::Tcp(tcp) => {
            let address = ctx.render(tcp)?;
            (Target::Tcp(address.clone()), address)
        }
        WaitTarget::Path(path) => {
            let path = ctx.path(path)?;
            (Target::Path(path.clone()), path.display().to_string())
        }
    };
    loop {
        // Why it is not ready yet: a wait that runs out says what it last saw
        // (a refused port is a service still starting; a name that does not
        // resolve is more likely a typo in the plan).
        let last = match &target {
            Target::Tcp(address) => {
                // A try that is not answered gives up within a second, and
                // as the time runs out.
                let limit = left().map_or(CONNECT, |left| left.clamp(MIN_CONNECT, CONNECT));
                match tokio::time::timeout(limit, tokio::net::TcpStream::connect(address.as_str()))
                    .await
                {
                    Ok(Ok(_)) => return Ok(Outputs::new()),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {}", humantime::format_duration(limit)),
                }
            }
            Target::Path(path) => match tokio::fs::try_exists(path).await {
                Ok(true) => return Ok(Outputs::new()),
                Ok(false) => "no such file or directory".to_string(),
                Err(error) => error.to_string(),
            },
        };
        if let Some(until) = spec.until {
            if started.elapsed() >= until {
                return Err(ActionError::NotReady {
                    target: describe,
                    after: until,
                    last,
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(left().map_or(poll, |left| poll.min(left))) => {}
            _ = ctx.cancel.cancelled() => return Err(ActionError::Interrupted),
        }
        poll = (poll * 3 / 2).min(Duration::from_secs(2));
    }
}

/// How long one connection try may take.
const CONNECT: Duration = Duration::from_secs(1);
/// ... at the least, even at the end of `until`: the last try is a real one.
const MIN_CONNECT: Duration = Duration::from_millis(100);

enum Target {
    Tcp(String),
    Path(std::path::PathBuf),
}
