//! The plan model: what a plan file says once it has been parsed and checked.
//!
//! Every value that a later check may need to point at keeps its [`Span`]. The
//! action-specific fields live in [`crate::actions`], one type per action.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use super::source::{SourceFile, Span, Spanned};
use crate::actions::Action;
use crate::graph::StepGraph;

/// The rebuild phases, in dependency order, and the drill-only teardown.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Provision,
    Configure,
    Restore,
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Provision,
        Phase::Configure,
        Phase::Restore,
        Phase::Teardown,
    ];
    pub const NAMES: [&'static str; 4] = ["provision", "configure", "restore", "teardown"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kind of run a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Always,
    Drill,
    Recovery,
}

impl When {
    pub const NAMES: [&'static str; 3] = ["always", "drill", "recovery"];

    pub fn name(self) -> &'static str {
        match self {
            When::Always => "always",
            When::Drill => "drill",
            When::Recovery => "recovery",
        }
    }

    /// Whether a step with this filter runs in a drill (`true`) or a recovery.
    pub fn applies(self, drill: bool) -> bool {
        match self {
            When::Always => true,
            When::Drill => drill,
            When::Recovery => !drill,
        }
    }
}

#[derive(Debug)]
pub struct Plan {
    pub source: Arc<SourceFile>,
    /// The directory relative paths in the plan resolve against.
    pub dir: PathBuf,
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub rto: Option<Spanned<Duration>>,
    pub rpo: Option<Spanned<Duration>>,
    pub concurrency: Option<usize>,
    pub vars: BTreeMap<String, Var>,
    pub secrets: BTreeMap<String, Secret>,
    pub pools: BTreeMap<String, Spanned<usize>>,
    pub stores: BTreeMap<String, Store>,
    /// The strings of store tables that hold `{{`: checked like step strings.
    pub store_texts: Vec<Spanned<String>>,
    pub steps: Vec<Step>,
    /// The step graph, built once: by validation, or by the first caller of
    /// [`Plan::graph`]. A loaded plan's steps and their `needs` do not change.
    pub(crate) graph: OnceLock<StepGraph>,
}

impl Plan {
    /// The graph of the plan's steps (see [`StepGraph`]).
    pub fn graph(&self) -> &StepGraph {
        self.graph.get_or_init(|| StepGraph::new(self))
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id.value == id)
    }

    /// The steps a run of this kind executes, in plan order.
    pub fn applicable(&self, drill: bool) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.applies(drill))
    }
}

/// A plan variable: a string, number or boolean, after `--vars` and `--var`.
#[derive(Clone, Debug)]
pub struct Var {
    pub value: serde_json::Value,
    pub span: Span,
    /// Where the value came from when it was overridden: shown in messages.
    pub overridden_by: Option<String>,
}

/// Where a secret's value is read from when a step needs it. The value itself is
/// never part of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Secret {
    pub source: SecretSource,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub name: Spanned<String>,
    pub kind: StoreKind,
}

#[derive(Clone, Debug)]
pub enum StoreKind {
    S3 {
        bucket: Spanned<String>,
        prefix: Option<Spanned<String>>,
        region: Option<Spanned<String>>,
        endpoint: Option<Spanned<String>>,
        path_style: bool,
    },
    Fs {
        path: Spanned<String>,
    },
}

impl StoreKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            StoreKind::S3 { .. } => "s3",
            StoreKind::Fs { .. } => "fs",
        }
    }
}

#[derive(Debug)]
pub struct Step {
    pub id: Spanned<String>,
    pub phase: Spanned<Phase>,
    pub action: Spanned<Action>,
    pub needs: Vec<Spanned<String>>,
    pub description: Option<String>,
    pub pool: Option<Spanned<String>>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    /// The first retry delay; doubled after each failure, jittered, capped.
    pub backoff: Duration,
    pub when: When,
    pub estimate: Option<Duration>,
    pub check: Option<Vec<Spanned<String>>>,
    pub idempotent: bool,
    /// The `[[step]]` header.
    pub span: Span,
    /// Every string value in the step's table that holds `{{`.
    pub texts: Vec<Spanned<String>>,
    /// A digest of the step's definition (and of the vars it uses): a resumed run
    /// compares it with the journal's to find steps whose definition changed.
    pub fingerprint: String,
}

impl Step {
    pub fn applies(&self, drill: bool) -> bool {
        self.when.applies(drill) && (drill || self.phase.value != Phase::Teardown)
    }
}

/// The retry delay never grows past this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The first retry delay when a step sets none.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Steps in flight at once when neither the plan nor `--concurrency` says.
pub const DEFAULT_CONCURRENCY: usize = 8;
