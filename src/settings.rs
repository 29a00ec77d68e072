//! The tuning settings Phoenix reads from its environment, each with its
//! default, in one place. A value that does not parse is said once, when a
//! command starts ([`problems`]), and the default is used: before, a
//! `PHOENIX_KILL_GRACE=30` (no unit) meant 10 seconds without a word.
//!
//! (`PHOENIX_STATE`, `PHOENIX_S3_ENDPOINT` and `PHOENIX_CACHE_DIR` name
//! places, not amounts: their readers say what is wrong with them.)

use std::time::Duration;

/// A duration such as `30s` or `2m`, at least `min`.
struct DurationSetting {
    name: &'static str,
    default: Duration,
    min: Duration,
}

/// A size such as `256MiB`.
struct SizeSetting {
    name: &'static str,
    default: u64,
}

const KILL_GRACE: DurationSetting = DurationSetting {
    name: "PHOENIX_KILL_GRACE",
    default: Duration::from_secs(10),
    min: Duration::ZERO,
};
const LEASE: DurationSetting = DurationSetting {
    name: "PHOENIX_LEASE",
    default: Duration::from_secs(60),
    min: Duration::from_secs(1),
};
const PART_TIMEOUT: DurationSetting = DurationSetting {
    name: "PHOENIX_PART_TIMEOUT",
    default: Duration::from_secs(60),
    min: Duration::ZERO,
};
const S3_TIMEOUT: DurationSetting = DurationSetting {
    name: "PHOENIX_S3_TIMEOUT",
    default: Duration::from_secs(30),
    min: Duration::ZERO,
};
const LOG_LIMIT: SizeSetting = SizeSetting {
    name: "PHOENIX_LOG_LIMIT",
    default: 1 << 30,
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

/// One line for each setting set to a value that does not parse (or is
/// below its least), saying the default used instead.
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

impl DurationSetting {
    fn parse(&self, text: &str) -> Option<Duration> {
        crate::plan::fields::parse_duration(text)
            .ok()
            .filter(|d| *d >= self.min)
    }

    fn get(&self) -> Duration {
        std::env::var(self.name)
            .ok()
            .and_then(|text| self.parse(&text))
            .unwrap_or(self.default)
    }

    fn problem(&self) -> Option<String> {
        let text = std::env::var(self.name).ok()?;
        if self.parse(&text).is_some() {
            return None;
        }
        let least = if self.min.is_zero() {
            String::new()
        } else {
            format!(" of at least {}", humantime::format_duration(self.min))
        };
        Some(format!(
            "`{}={text}` is not a duration{least} such as `30s` or `2m`: using the default, {}",
            self.name,
            humantime::format_duration(self.default)
        ))
    }
}

impl SizeSetting {
    fn parse(&self, text: &str) -> Option<u64> {
        crate::plan::fields::parse_size(text)
    }

    fn get(&self) -> u64 {
        std::env::var(self.name)
            .ok()
            .and_then(|text| self.parse(&text))
            .unwrap_or(self.default)
    }

    fn problem(&self) -> Option<String> {
        let text = std::env::var(self.name).ok()?;
        if self.parse(&text).is_some() {
            return None;
        }
        Some(format!(
            "`{}={text}` is not a size such as `256MiB` or `2GiB`: using the default, {}",
            self.name,
            crate::report::terminal::bytes(self.default as f64)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_by_kind_and_least() {
        assert_eq!(KILL_GRACE.parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(KILL_GRACE.parse("30"), None, "a unit is needed");
        assert_eq!(LEASE.parse("500ms"), None, "below its least");
        assert_eq!(LEASE.parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(LOG_LIMIT.parse("256MiB"), Some(256 << 20));
        assert_eq!(LOG_LIMIT.parse("lots"), None);
    }
}
