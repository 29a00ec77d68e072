//! Reading a journal back: parsing with line numbers, the torn-tail rule, and
//! folding records into where each step stands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::record::{Header, Outcome, Outputs, Record, RunResult, SkipReason, FORMAT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal holds no complete record{}: the run never started", if *.torn { " (its only line is torn)" } else { "" })]
    Empty { torn: bool },
    #[error("journal line 1 is not a header record")]
    NoHeader,
    #[error("journal line {line} is damaged: {message}")]
    Damaged { line: usize, message: String },
    #[error(
        "the journal was written by a newer phoenix (format {0}, this one reads {FORMAT_VERSION})"
    )]
    NewerFormat(u32),
}

/// A journal's torn last line: where it starts, to cut it off.
#[derive(Debug, Clone, Copy)]
pub struct TornTail {
    pub offset: u64,
    pub line: usize,
}

pub struct RunLog {
    pub header: Header,
    pub records: Vec<Record>,
    pub torn: Option<TornTail>,
}

impl RunLog {
    /// Parses a journal. A last line that does not parse is a crash mid-write:
    /// it is reported in `torn` and left out. Any other line that does not parse
    /// is damage, and an error naming the line.
    pub fn parse(bytes: &[u8]) -> Result<RunLog, JournalError> {
        let mut records = Vec::new();
        let mut torn = None;
        let mut offset = 0usize;
        let total = bytes.len();
        let mut line_number = 0;
        while offset < total {
            line_number += 1;
            let end = bytes[offset..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| offset + i);
            let line_end = end.unwrap_or(total);
            let line = &bytes[offset..line_end];
            let next = end.map(|e| e + 1).unwrap_or(total);
            let is_last = next >= total;
            match serde_json::from_slice::<Record>(line) {
                Ok(record) if end.is_some() => records.push(record),
                Ok(_) | Err(_) if is_last => {
                    torn = Some(TornTail {
                        offset: offset as u64,
                        line: line_number,
                    });
                }
                Ok(_) => unreachable!("a line without a newline is the last"),
                Err(err) => {
                    return Err(JournalError::Damaged {
                        line: line_number,
                        message: err.to_string(),
                    })
                }
            }
            offset = next;
        }
        let mut records = records.into_iter();
        let header = match records.next() {
            Some(Record::Header(header)) => header,
            Some(_) => return Err(JournalError::NoHeader),
            None => {
                return Err(JournalError::Empty {
                    torn: torn.is_some(),
                })
            }
        };
        if header.format > FORMAT_VERSION {
            return Err(JournalError::NewerFormat(header.format));
        }
        Ok(RunLog {
            header,
            records: records.collect(),
            torn,
        })
    }

    /// Where the run and each step stand, from the records alone.
    pub fn fold(&self) -> RunView {
        let mut view = RunView::new(&self.header);
        for record in &self.records {
            view.apply(record);
        }
        view
    }
}

impl RunView {
    /// A run that has its header and nothing else yet.
    pub fn new(header: &Header) -> RunView {
        RunView {
            fingerprints: header.fingerprints.clone(),
            plan_hash: header.plan_hash.clone(),
            plan_path: header.plan_path.clone(),
            plan_dir: header.plan_dir.clone(),
            started_at: header.started_at,
            finished_at: None,
            result: None,
            resumes: 0,
            abandoned: false,
            // A step each, grown once instead of rehashed as the run goes.
            steps: HashMap::with_capacity_and_hasher(header.fingerprints.len(), Default::default()),
            paused_at: None,
            approvals: Vec::new(),
            chaos: Vec::new(),
            interruptions: 0,
            changed: Vec::new(),
        }
    }

    /// Folds one more record in: what reading it back from the journal would do.
    pub fn apply(&mut self, record: &Record) {
        let view = self;
        match record {
            Record::Header(_) => {}
            Record::Started { step, attempt, at } => {
                let s = view.step(step);
                s.state = StepState::InDoubt;
                s.attempts = s.attempts.max(*attempt);
                s.started_at.get_or_insert(*at);
                s.last_started_at = Some(*at);
                s.finished_at = None;
            }
            Record::Finished {
                step,
                attempt,
                at,
                outcome,
                outputs,
                withheld,
                error,
                duration_seconds,
            } => {
                let s = view.step(step);
                s.attempts = s.attempts.max(*attempt);
                s.state = match outcome {
                    Outcome::Succeeded => StepState::Succeeded,
                    Outcome::Failed => StepState::Failed,
                };
                s.outputs = outputs.clone();
                s.withheld = withheld.clone();
                s.error = error.clone();
                s.finished_at = Some(*at);
                s.duration_seconds = Some(*duration_seconds);
                if s.started_at.is_none() {
                    s.started_at = Some(
                        *at - chrono::Duration::milliseconds((*duration_seconds * 1000.0) as i64),
                    );
                }
            }
            Record::Frozen { step, values } => view.step(step).frozen.extend(values.clone()),
            Record::Skipped {
                step,
                at,
                reason,
                outputs,
                withheld,
            } => {
                let s = view.step(step);
                s.state = StepState::Skipped;
                s.skip = Some(reason.clone());
                s.finished_at = Some(*at);
                if !outputs.is_empty() {
                    s.outputs = outputs.clone();
                    s.withheld = withheld.clone();
                }
            }
            Record::Resumed(resumed) => {
                view.resumes += 1;
                view.result = None;
                view.finished_at = None;
                view.paused_at = None;
                if let Some(fingerprints) = &resumed.fingerprints {
                    view.fingerprints = fingerprints.clone();
                }
                if let Some(hash) = &resumed.plan_hash {
                    view.plan_hash = hash.clone();
                }
                if let (Some(path), Some(dir)) = (&resumed.plan_path, &resumed.plan_dir) {
                    view.plan_path = path.clone();
                    view.plan_dir = dir.clone();
                }
                view.changed
                    .extend(resumed.changed.iter().map(|c| c.step.clone()));
                view.abandoned |= resumed.abandoned;
            }
            Record::Interrupted { .. } | Record::Fenced { .. } => view.interruptions += 1,
            Record::Paused { step, .. } => {
                // A gate waiting for a person is not in doubt: it has not acted.
                view.step(step).state = StepState::Pending;
                view.paused_at = Some(step.clone());
            }
            Record::Approved { step, at, by, host } => view.approvals.push(Approval {
                step: step.clone(),
                at: *at,
                by: by.clone(),
                host: host.clone(),
            }),
            Record::Chaos { step, at, event } => view.chaos.push(ChaosEvent {
                step: step.clone(),
                at: *at,
                event: event.clone(),
            }),
            Record::Ended { at, result } => {
                view.result = Some(*result);
                view.finished_at = Some(*at);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    InDoubt,
}

impl StepState {
    /// The name `status --format json` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::InDoubt => "in_doubt",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct StepView {
    pub state: StepState,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub last_started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub outputs: Outputs,
    /// The outputs that held a secret's value: see `Record::mask`.
    pub withheld: BTreeSet<String>,
    pub error: Option<String>,
    pub frozen: BTreeMap<String, serde_json::Value>,
    pub skip: Option<SkipReason>,
}

impl StepView {
    /// Done for the purpose of its dependents: succeeded, or accepted as done.
    pub fn is_done(&self) -> bool {
        match self.state {
            StepState::Succeeded => true,
            StepState::Skipped => matches!(
                self.skip,
                Some(SkipReason::Operator { .. }) | Some(SkipReason::Check)
            ),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Approval {
    pub step: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    pub by: String,
    pub host: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChaosEvent {
    pub step: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    pub event: String,
}

pub struct RunView {
    pub fingerprints: BTreeMap<String, String>,
    pub plan_hash: String,
    /// The plan file the run goes on with, and its directory: the header's,
    /// or the latest `resume --plan`'s.
    pub plan_path: String,
    pub plan_dir: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How the latest run or resume ended; `None` when it is live or crashed.
    pub result: Option<RunResult>,
    pub resumes: usize,
    /// Abandoned by `resume --abandon`: only the teardown runs from then on.
    pub abandoned: bool,
    /// By step id. A hash map: a 100,000-step run looks every step up as its
    /// journal is folded and again for its report. Hashed with foldhash
    /// instead of SipHash: the keys are the plan's own ids, and SipHash was
    /// most of the fold's time for each record of a run of short steps.
    pub steps: HashMap<String, StepView, foldhash::fast::RandomState>,
    pub paused_at: Option<String>,
    pub approvals: Vec<Approval>,
    pub chaos: Vec<ChaosEvent>,
    pub interruptions: usize,
    pub changed: Vec<String>,
}

impl RunView {
    fn step(&mut self, id: &str) -> &mut StepView {
        // Most records are about a step seen before: no key to allocate then.
        if !self.steps.contains_key(id) {
            self.steps.insert(id.to_string(), StepView::default());
        }
        self.steps.get_mut(id).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_line() -> String {
        let header = Header {
            format: 1,
            run_id: "r".into(),
            plan: "p".into(),
            plan_hash: "h".into(),
            plan_path: "p.toml".into(),
            plan_dir: ".".into(),
            drill: false,
            started_at: Utc::now(),
            vars: BTreeMap::new(),
            fingerprints: BTreeMap::new(),
            concurrency: 1,
            keep_going: false,
            chaos: None,
            host: "h".into(),
            pid: 1,
            phoenix_version: "0".into(),
        };
        serde_json::to_string(&Record::Header(header)).unwrap()
    }

    #[test]
    fn a_step_state_is_named_as_in_json() {
        use StepState::*;
        for state in [Pending, Running, Succeeded, Failed, Skipped, InDoubt] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn a_torn_last_line_is_set_aside() {
        let text = format!("{}\n{{\"type\":\"started\",\"step\":\"a\",\"attempt\":1,\"at\":\"2026-01-01T00:00:00Z\"}}\n{{\"type\":\"fini", header_line());
        let log = RunLog::parse(text.as_bytes()).unwrap();
        assert_eq!(log.records.len(), 1);
        let torn = log.torn.unwrap();
        assert_eq!(torn.line, 3);
        assert_eq!(&text[torn.offset as usize..], "{\"type\":\"fini");
        assert_eq!(log.fold().steps["a"].state, StepState::InDoubt);
    }

    #[test]
    fn damage_before_the_last_line_names_the_line() {
        let text = format!("{}\ngarbage\n{{\"type\":\"ended\",\"at\":\"2026-01-01T00:00:00Z\",\"result\":\"failed\"}}\n", header_line());
        match RunLog::parse(text.as_bytes()) {
            Err(JournalError::Damaged { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected damage, got {:?}", other.err()),
        }
    }
}
