//! The tuning settings Phoenix reads from its environment, each with its
//! default, in one place. A value that does not parse is said once, when a
//! command starts ([`problems`]), and the default is used: before, a
//! `PHOENIX_KILL_GRACE=30` (no unit) meant 10 seconds without a word.
//!
//! (`PHOENIX_STATE`, `PHOENIX_S3_ENDPOINT` and `PHOENIX_CACHE_DIR` name
//! places, not amounts: their readers say what is wrong with them.)

use std::time::Duration;

/// One variable: how its text is read, and what stands when it is not set
/// or does not parse.
struct Setting<T: 'static> {
    name: &'static str,
    default: T,
    parse: fn(&str) -> Option<T>,
    /// What a value looks like, for the warning.
    wanted: &'static str,
    show: fn(&T) -> String,
}

const DURATION: &str = "a duration such as `30s` or `2m`";

const KILL_GRACE: Setting<Duration> = Setting {
    name: "PHOENIX_KILL_GRACE",
    default: Duration::from_secs(10),
    parse: duration,
    wanted: DURATION,
    show: show_duration,
};
const LEASE: Setting<Duration> = Setting {
    name: "PHOENIX_LEASE",
    default: Duration::from_secs(60),
    parse: |text| duration(text).filter(|d| *d >= Duration::from_secs(1)),
    wanted: "a duration of at least 1s, such as `30s` or `2m`",
    show: show_duration,
};
const PART_TIMEOUT: Setting<Duration> = Setting {
    name: "PHOENIX_PART_TIMEOUT",
    default: Duration::from_secs(60),
    parse: duration,
    wanted: DURATION,
    show: show_duration,
};
const S3_TIMEOUT: Setting<Duration> = Setting {
    name: "PHOENIX_S3_TIMEOUT",
    default: Duration::from_secs(30),
    parse: duration,
    wanted: DURATION,
    show: show_duration,
};
const LOG_LIMIT: Setting<u64> = Setting {
    name: "PHOENIX_LOG_LIMIT",
    default: 1 << 30,
    parse: crate::plan::fields::parse_size,
    wanted: "a size such as `256MiB` or `2GiB`",
    show: |n| crate::report::terminal::bytes(*n as f64),
};

/// How long a step's process group gets between SIGTERM and SIGKILL.
pub fn kill_grace() -> Duration {
    KILL_GRACE.get()
}

/// How long a lease on a remote state lasts unless renewed.
pub fn lease() -> Duration {
    LEASE.get()
}

/// How long one part of a download may take before it counts as stalled.
pub fn part_timeout() -> Duration {
    PART_TIMEOUT.get()
}

/// The read timeout of one S3 call.
pub fn s3_timeout() -> Duration {
    S3_TIMEOUT.get()
}

/// How much of a step's output its log keeps from the start.
pub fn log_limit() -> u64 {
    LOG_LIMIT.get()
}

/// One line for each setting set to a value that does not parse, saying
/// the default used instead.
pub fn problems() -> Vec<String> {
    [
        KILL_GRACE.problem(),
        LEASE.problem(),
        PART_TIMEOUT.problem(),
        S3_TIMEOUT.problem(),
        LOG_LIMIT.problem(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn duration(text: &str) -> Option<Duration> {
    crate::plan::fields::parse_duration(text).ok()
}

fn show_duration(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

impl<T: Copy> Setting<T> {
    fn get(&self) -> T {
        std::env::var(self.name)
            .ok()
            .and_then(|text| (self.parse)(&text))
            .unwrap_or(self.default)
    }

    fn problem(&self) -> Option<String> {
        let text = std::env::var(self.name).ok()?;
        if (self.parse)(&text).is_some() {
            return None;
        }
        Some(format!(
            "`{}={text}` is not {}: using the default, {}",
            self.name,
            self.wanted,
            (self.show)(&self.default)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_by_kind_and_least() {
        assert_eq!((KILL_GRACE.parse)("30s"), Some(Duration::from_secs(30)));
        assert_eq!((KILL_GRACE.parse)("30"), None, "a unit is needed");
        assert_eq!((LEASE.parse)("500ms"), None, "below its least");
        assert_eq!((LEASE.parse)("2m"), Some(Duration::from_secs(120)));
        assert_eq!((LOG_LIMIT.parse)("256MiB"), Some(256 << 20));
        assert_eq!((LOG_LIMIT.parse)("lots"), None);
    }
}
