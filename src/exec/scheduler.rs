//! The walker: starts each step as soon as all it needs is done, within the
//! global limit and the step's pool, and decides what a failure, a pause or an
//! interrupt stops.
//!
//! One loop owns all scheduling state; steps run as tasks and report back by
//! message, so no lock guards the graph. A step gives back its concurrency slot
//! as soon as its action is over, but its dependents start only once its finish
//! record is durable. The walker asks the journal for that sync only when it
//! has a free slot and nothing to start: while other work is ready, finishes
//! wait for a later sync and share it.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;

use super::attempt::{run_step, Message, StepOutcome};
use super::{Event, Shared};
use crate::journal::record::{Record, RunResult, SkipReason};
use crate::plan::Phase;

/// Where a step starts this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// To run; its attempts are numbered from `first_attempt`.
    Pending { first_attempt: u32 },
    /// Done already (in an earlier run, or accepted as done).
    Done,
    /// Not part of this kind of run (`when`, or teardown outside a drill).
    NotApplicable,
    /// Left as it is by this session: a drill being abandoned runs only its
    /// teardown (`resume --abandon`). The run does not succeed.
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
    NotApplicable,
    Stopped,
}

impl State {
    fn satisfies(self) -> bool {
        matches!(self, State::Done | State::NotApplicable)
    }
}

struct Walker {
    shared: Arc<Shared>,
    state: Vec<State>,
    first_attempt: Vec<u32>,
    /// Needs not yet satisfied. Teardown steps count only teardown needs: they
    /// wait for the rest of the run as a whole instead.
    remaining: Vec<usize>,
    teardown: Vec<bool>,
    /// Whether a running step has given back its slot (once only).
    released: Vec<bool>,
    priority: Vec<u64>,
    ready: BinaryHeap<(u64, std::cmp::Reverse<usize>)>,
    pools: HashMap<String, (usize, usize)>,
    in_flight: usize,
    /// Steps that succeeded and whose finish record waits for a sync.
    awaiting_sync: usize,
    finished: Vec<bool>,
    /// A sync was asked for and no step has been confirmed durable since.
    sync_asked: bool,
    running: usize,
    running_main: usize,
    /// Steps not started yet (nor skipped), and whether the run was told
    /// that few are left.
    waiting: usize,
    last_steps_told: bool,
    fail_stop: bool,
    interrupted: bool,
    paused: bool,
    teardown_released: bool,
}

/// Runs every pending step; returns how the run ended.
pub async fn execute(shared: Arc<Shared>, starts: Vec<Start>) -> RunResult {
    let n = shared.plan.steps.len();
    let teardown: Vec<bool> = shared
        .plan
        .steps
        .iter()
        .map(|s| s.phase.value == Phase::Teardown)
        .collect();
    let mut walker = Walker {
        state: starts
            .iter()
            .map(|s| match s {
                Start::Pending { .. } => State::Waiting,
                Start::Done => State::Done,
                Start::NotApplicable => State::NotApplicable,
                Start::Left => State::Stopped,
            })
            .collect(),
        first_attempt: starts
            .iter()
            .map(|s| match s {
                Start::Pending { first_attempt } => *first_attempt,
                _ => 1,
            })
            .collect(),
        remaining: vec![0; n],
        priority: priorities(&shared),
        released: vec![false; n],
        teardown,
        ready: BinaryHeap::new(),
        pools: shared
            .plan
            .pools
            .iter()
            .map(|(name, size)| (name.clone(), (size.value, 0)))
            .collect(),
        in_flight: 0,
        awaiting_sync: 0,
        finished: vec![false; n],
        sync_asked: false,
        running: 0,
        running_main: 0,
        waiting: starts
            .iter()
            .filter(|s| matches!(s, Start::Pending { .. }))
            .count(),
        last_steps_told: false,
        fail_stop: false,
        interrupted: false,
        paused: false,
        teardown_released: false,
        shared,
    };
    for i in 0..n {
        let count = walker
            .shared
            .plan
            .graph()
            .dependencies(i)
            .filter(|&d| {
                !walker.state[d].satisfies() && (!walker.teardown[i] || walker.teardown[d])
            })
            .count();
        walker.remaining[i] = count;
        if count == 0 && walker.state[i] == State::Waiting && !walker.teardown[i] {
            walker
                .ready
                .push((walker.priority[i], std::cmp::Reverse(i)));
        }
    }
    walker.run().await
}

/// The longest chain of work from each step to the end of the plan: ready steps
/// on long chains start first, which keeps the makespan near the critical path.
fn priorities(shared: &Shared) -> Vec<u64> {
    let plan = &shared.plan;
    let graph = plan.graph();
    let order = graph.topological_order().unwrap_or_default();
    let mut level = vec![0u64; plan.steps.len()];
    for &i in order.iter().rev() {
        let own = plan.steps[i]
            .estimate
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + 1;
        let after = graph.dependents(i).map(|d| level[d]).max().unwrap_or(0);
        level[i] = own + after;
    }
    level
}

impl Walker {
    async fn run(&mut self) -> RunResult {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let interrupt = self.shared.interrupt.clone();
        // Interrupted before the first step (during a resume's checks, or by
        // a lease lost at once): nothing starts.
        self.interrupted = interrupt.is_cancelled();
        loop {
            self.start_ready(&tx);
            self.tell_last_steps();
            self.sync_if_idle();
            if self.running == 0 {
                if self.release_teardown() {
                    continue;
                }
                break;
            }
            tokio::select! {
                biased;
                _ = interrupt.cancelled(), if !self.interrupted => {
                    self.interrupted = true;
                }
                Some(message) = rx.recv() => self.handle(message),
            }
        }
        self.result()
    }

    fn halted(&self) -> bool {
        self.interrupted || self.paused
    }

    fn start_ready(&mut self, tx: &mpsc::UnboundedSender<Message>) {
        if self.halted() {
            return;
        }
        let mut deferred = Vec::new();
        while self.in_flight < self.shared.concurrency {
            let Some((priority, std::cmp::Reverse(i))) = self.ready.pop() else {
                break;
            };
            if self.state[i] != State::Waiting {
                continue;
            }
            if self.fail_stop && !self.teardown[i] {
                // Not started: a resume runs it.
                continue;
            }
            if self.teardown[i] {
                if let Some(missing) = self.outputs_missing(i) {
                    self.skip_teardown(i, &missing);
                    continue;
                }
            }
            let step = &self.shared.plan.steps[i];
            if let Some(pool) = &step.pool {
                let (size, used) = self.pools.get_mut(pool.as_str()).expect("validated pool");
                if *used >= *size {
                    deferred.push((priority, std::cmp::Reverse(i)));
                    continue;
                }
                *used += 1;
            }
            self.state[i] = State::Running;
            self.waiting -= 1;
            self.released[i] = false;
            self.in_flight += 1;
            self.running += 1;
            if !self.teardown[i] {
                self.running_main += 1;
            }
            tokio::spawn(run_step(
                Arc::clone(&self.shared),
                i,
                self.first_attempt[i],
                tx.clone(),
            ));
        }
        self.ready.extend(deferred);
    }

    /// Tells the run once few steps are left to start: enough that they take
    /// a while even when short (16 rounds of the concurrency limit, at least
    /// 64 steps), few enough that what the run stops keeping up for them
    /// costs nothing.
    fn tell_last_steps(&mut self) {
        let few = (16 * self.shared.concurrency).max(64);
        if !self.last_steps_told && self.waiting <= few {
            self.last_steps_told = true;
            self.shared.last_steps();
        }
    }

    /// Asks the journal to sync when a slot would otherwise stay empty (or the
    /// run is stopping) while finished steps wait for durability.
    fn sync_if_idle(&mut self) {
        if self.awaiting_sync > 0
            && !self.sync_asked
            && (self.halted() || self.fail_stop || self.in_flight < self.shared.concurrency)
        {
            self.shared.journal.sync();
            self.sync_asked = true;
        }
    }

    /// In a drill, once the rest of the run has settled, the teardown steps
    /// become ready. Returns whether any did.
    fn release_teardown(&mut self) -> bool {
        if self.teardown_released
            || !self.shared.run.drill
            || self.halted()
            || self.running_main > 0
        {
            return false;
        }
        let settled = self.fail_stop
            || (0..self.state.len()).all(|i| self.teardown[i] || self.state[i] != State::Waiting);
        if !settled {
            return false;
        }
        self.teardown_released = true;
        let mut any = false;
        for i in 0..self.state.len() {
            if self.teardown[i] && self.state[i] == State::Waiting && self.remaining[i] == 0 {
                self.ready.push((self.priority[i], std::cmp::Reverse(i)));
                any = true;
            }
        }
        any
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Released(i) => {
                if std::mem::replace(&mut self.released[i], true) {
                    return;
                }
                self.in_flight -= 1;
                if let Some(pool) = &self.shared.plan.steps[i].pool {
                    if let Some((_, used)) = self.pools.get_mut(pool.as_str()) {
                        *used -= 1;
                    }
                }
            }
            Message::Finished(i) => {
                self.handle(Message::Released(i));
                self.finished[i] = true;
                self.awaiting_sync += 1;
            }
            Message::Done(i, outcome) => {
                // A step that ended without giving back its slot gives it back now.
                self.handle(Message::Released(i));
                if std::mem::replace(&mut self.finished[i], false) {
                    self.awaiting_sync -= 1;
                    self.sync_asked = false;
                }
                self.running -= 1;
                if !self.teardown[i] {
                    self.running_main -= 1;
                }
                match outcome {
                    StepOutcome::Succeeded { outputs } => {
                        self.state[i] = State::Done;
                        let id = self.shared.plan.steps[i].id.value.clone();
                        self.shared
                            .outputs
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, outputs);
                        self.unblock_dependents(i);
                    }
                    StepOutcome::Failed { .. } => {
                        self.state[i] = State::Failed;
                        if self.teardown[i] || self.shared.keep_going {
                            self.skip_downstream(i);
                        } else {
                            self.fail_stop = true;
                        }
                    }
                    StepOutcome::Interrupted => self.state[i] = State::Stopped,
                    StepOutcome::Paused => {
                        self.state[i] = State::Stopped;
                        self.paused = true;
                    }
                }
            }
        }
    }

    fn unblock_dependents(&mut self, i: usize) {
        let dependents: Vec<usize> = self.shared.plan.graph().dependents(i).collect();
        for d in dependents {
            if self.teardown[d] && !self.teardown[i] {
                continue;
            }
            self.remaining[d] = self.remaining[d].saturating_sub(1);
            if self.remaining[d] == 0
                && self.state[d] == State::Waiting
                && (!self.teardown[d] || self.teardown_released)
            {
                self.ready.push((self.priority[d], std::cmp::Reverse(d)));
            }
        }
    }

    /// A step whose outputs step `i` reads but which has none: it did not
    /// succeed (or was skipped by the operator). Teardown steps run after
    /// failures too, so this is where a drill that failed early meets them.
    fn outputs_missing(&self, i: usize) -> Option<String> {
        let outputs = self
            .shared
            .outputs
            .read()
            .unwrap_or_else(|e| e.into_inner());
        self.shared.plan.steps[i]
            .texts
            .iter()
            .flat_map(|text| crate::plan::interpolate::outputs_read(text))
            .find(|id| !outputs.contains_key(id))
    }

    /// A teardown step that reads the outputs of a step that never produced
    /// them has nothing it could name to tear down: it is skipped, saying why,
    /// instead of failing on an undefined value, and the teardown steps that
    /// need it go on. A resume runs it again once that step has succeeded.
    /// (Teardown steps that read no such outputs run regardless, as the spec
    /// says: a `terraform destroy` cleans up a half-made resource as well.)
    fn skip_teardown(&mut self, i: usize, missing: &str) {
        self.skip(
            i,
            missing,
            format!("it reads the outputs of `{missing}`, which did not succeed"),
        );
        // The teardown steps that need it still run: what they tear down
        // may well exist.
        self.unblock_dependents(i);
    }

    /// Marks every step downstream of a failed one as skipped (of its own part
    /// of the run: a failed rebuild step does not skip the teardown).
    fn skip_downstream(&mut self, failed: usize) {
        let failed_id = self.shared.plan.steps[failed].id.value.clone();
        let downstream = self.shared.plan.graph().descendants_of([failed]);
        for d in downstream.ones() {
            if d == failed
                || self.state[d] != State::Waiting
                || self.teardown[d] != self.teardown[failed]
            {
                continue;
            }
            self.skip(d, &failed_id, format!("`{failed_id}` failed"));
        }
    }

    /// Marks step `i` skipped because of step `cause`, in the journal (a
    /// resume runs it again) and on the terminal.
    fn skip(&mut self, i: usize, cause: &str, reason: String) {
        self.state[i] = State::Skipped;
        self.waiting -= 1;
        let step = &self.shared.plan.steps[i];
        self.shared.journal.append(Record::Skipped {
            step: step.id.value.clone(),
            at: Utc::now(),
            reason: SkipReason::Upstream {
                failed: cause.to_string(),
            },
            outputs: Default::default(),
            withheld: Default::default(),
        });
        self.shared.events.emit(Event::StepSkipped {
            step: step.id.value.clone(),
            phase: step.phase.value,
            reason,
        });
    }

    fn result(&self) -> RunResult {
        if self.interrupted {
            RunResult::Interrupted
        } else if self.paused {
            RunResult::Paused
        } else if self.state.iter().all(|s| s.satisfies()) {
            RunResult::Succeeded
        } else {
            RunResult::Failed
        }
    }
}
