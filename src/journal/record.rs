//! Journal records: one JSON object a line, tagged by `type`.
//!
//! The first record of a journal is a [`Header`]. Every field a later version may
//! not write is optional, and readers ignore fields they do not know, so that the
//! format can grow without breaking old journals.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped when a record changes meaning; readers refuse a newer format.
pub const FORMAT_VERSION: u32 = 1;

pub type Outputs = BTreeMap<String, String>;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    /// An attempt began. Durable before the action runs only for steps with
    /// `idempotent = false`; for the rest it rides the next group commit.
    Started {
        step: String,
        attempt: u32,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
    },
    /// An attempt ended; durable before the step counts as done.
    Finished {
        step: String,
        attempt: u32,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        outputs: Outputs,
        /// The outputs that held a secret's value: kept masked, never passed
        /// on (see [`Record::mask`]).
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        withheld: BTreeSet<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_seconds: f64,
    },
    /// What a step resolved on its first run (a commit, a backup), used again by
    /// every later attempt and resume.
    Frozen {
        step: String,
        values: BTreeMap<String, serde_json::Value>,
    },
    /// A step not run: by the operator's `--skip`, because a step it needs
    /// failed, or because its `check` found it done (with the outputs the
    /// check gave).
    Skipped {
        step: String,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        reason: SkipReason,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        outputs: Outputs,
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        withheld: BTreeSet<String>,
    },
    /// A resume began: who, and what it decided.
    Resumed(Resumed),
    /// A run (or a resume of it) stopped on SIGINT or SIGTERM.
    Interrupted {
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        signal: String,
    },
    /// Another process took this run's remote lease over (or it was removed
    /// by `unlock --force`): whatever the old holder writes after this is refused.
    Fenced {
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        by: String,
    },
    /// The run stopped at an approval gate.
    Paused {
        step: String,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        prompt: String,
    },
    /// A person (or `--yes`) approved a gate.
    Approved {
        step: String,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        by: String,
        host: String,
    },
    /// An event injected by `--chaos`.
    Chaos {
        step: String,
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        event: String,
    },
    /// The run (or this resume of it) ended.
    Ended {
        #[serde(serialize_with = "crate::timestamp::serialize")]
        at: DateTime<Utc>,
        result: RunResult,
    },
}

impl Record {
    /// Masks every secret in the text this record carries from outside
    /// Phoenix: a step's outputs and error, an approval's prompt. Only there:
    /// masking the serialized line instead turned a secret that also appears
    /// in Phoenix's own fields (a PIN `2026` in every timestamp and run id, a
    /// word in a field name) into records the journal could no longer read,
    /// and missed a secret JSON had escaped (a quote, a key file's line
    /// breaks). What a resume must find again exactly is kept as it is: what
    /// a step froze (the commit or the backup it chose: ids, object keys,
    /// digests, times) and the header's `--var` values, which are not secrets
    /// (a run warns when one holds a secret's value).
    ///
    /// An output that held a secret is named in `withheld` too: a resume
    /// reads back only its masked value, which no step may be given in its
    /// place (a password of `***` in a config, a path ending in a glob).
    pub fn mask(&mut self, masker: &crate::exec::secrets::Masker) {
        // Whether there was a secret to mask.
        let text = |text: &mut String| match masker.mask(text) {
            std::borrow::Cow::Owned(masked) => {
                *text = masked;
                true
            }
            std::borrow::Cow::Borrowed(_) => false,
        };
        let outputs = |outputs: &mut Outputs, withheld: &mut BTreeSet<String>| {
            for (key, value) in outputs.iter_mut() {
                if text(value) {
                    withheld.insert(key.clone());
                }
            }
        };
        match self {
            Record::Finished {
                outputs: values,
                withheld,
                error,
                ..
            } => {
                outputs(values, withheld);
                error.iter_mut().for_each(|error| {
                    text(error);
                });
            }
            Record::Skipped {
                outputs: values,
                withheld,
                ..
            } => outputs(values, withheld),
            Record::Paused { prompt, .. } => {
                text(prompt);
            }
            Record::Header(_)
            | Record::Frozen { .. }
            | Record::Started { .. }
            | Record::Resumed(_)
            | Record::Interrupted { .. }
            | Record::Fenced { .. }
            | Record::Approved { .. }
            | Record::Chaos { .. }
            | Record::Ended { .. } => {}
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: u32,
    pub run_id: String,
    pub plan: String,
    /// SHA-256 of the plan file's text.
    pub plan_hash: String,
    /// The plan file as given, and the directory its relative paths resolve against.
    pub plan_path: String,
    pub plan_dir: String,
    pub drill: bool,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub started_at: DateTime<Utc>,
    /// Vars overridden by `--vars` and `--var`: a resume resolves the plan the same way.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Step id to fingerprint of its definition.
    pub fingerprints: BTreeMap<String, String>,
    pub concurrency: usize,
    #[serde(default)]
    pub keep_going: bool,
    #[serde(default)]
    pub chaos: Option<String>,
    pub host: String,
    pub pid: u32,
    pub phoenix_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Resumed {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    /// Fingerprints of the plan this resume runs, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    /// The plan file this resume was given with `--plan` (absolute) and its
    /// directory: the plan the run goes on with from here, which a later
    /// resume reads again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_dir: Option<String>,
    /// Steps run again because their definition (or one they need) changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<ChangedStep>,
    /// Steps found started but unfinished, and what was done about each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_doubt: Vec<InDoubt>,
    /// `resume --abandon`: the drill stops where it is and only its teardown
    /// runs, in this resume and every later one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChangedStep {
    pub step: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InDoubt {
    pub step: String,
    /// `rerun`, `check_passed`, `skipped` (by the operator).
    pub decision: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum SkipReason {
    /// `phoenix resume --skip STEP`: accepted as done.
    Operator { user: String },
    /// A step it needs failed (`--keep-going`).
    Upstream { failed: String },
    /// An in-doubt step whose `check` said it is already done.
    Check,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Succeeded,
    Failed,
    Interrupted,
    Paused,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Succeeded => "succeeded",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
            RunResult::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::secrets::Masker;

    #[test]
    fn only_text_from_outside_is_masked() {
        let masker = Masker::default();
        // A key file's lines and a quote: JSON escapes both, so the
        // serialized line never held the value as it is.
        let key = "-----BEGIN KEY-----\nab\"cd\n-----END KEY-----";
        masker.add(key);
        masker.add("finished");
        let mut record = Record::Finished {
            step: "finished".into(),
            attempt: 1,
            at: Utc::now(),
            outcome: Outcome::Succeeded,
            outputs: [
                ("key".to_string(), format!("{key}\n")),
                ("plain".to_string(), "value".to_string()),
            ]
            .into(),
            withheld: Default::default(),
            error: Some(format!("printed {key} and finished")),
            duration_seconds: 1.0,
        };
        record.mask(&masker);
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            line.starts_with(r#"{"type":"finished","step":"finished","#),
            "{line}"
        );
        assert!(
            line.contains(r#""outputs":{"key":"***\n","plain":"value"},"withheld":["key"]"#),
            "{line}"
        );
        assert!(line.contains(r#""error":"printed *** and ***""#), "{line}");

        let header: Header = serde_json::from_str(
            r#"{"format":1,"run_id":"finished","plan":"p","plan_hash":"h","plan_path":"p","plan_dir":"d","drill":false,"started_at":"2026-01-01T00:00:00Z","vars":{"day":"finished"},"fingerprints":{},"concurrency":1,"host":"h","pid":1,"phoenix_version":"v"}"#,
        )
        .unwrap();
        let mut masked = Record::Header(header.clone());
        masked.mask(&masker);
        assert_eq!(masked, Record::Header(header), "a resume reads it back");

        let frozen = Record::Frozen {
            step: "s".into(),
            values: [("key".to_string(), serde_json::json!("db-finished.dump"))].into(),
        };
        let mut masked = frozen.clone();
        masked.mask(&masker);
        assert_eq!(masked, frozen, "what a resume must find again is kept");
    }
}
