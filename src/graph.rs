//! The step graph: dependency edges between steps, and what can be computed from
//! them without running anything: cycles, ancestors, execution waves and the
//! critical path.
//!
//! Nodes are indexes into `Plan::steps`; an edge runs from a dependency to the
//! step that needs it, so edges point the way work flows.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use fixedbitset::FixedBitSet;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::plan::model::{Phase, Plan};

#[derive(Debug)]
pub struct StepGraph {
    graph: DiGraph<usize, ()>,
}

impl StepGraph {
    /// The graph of every step, with an edge for each `needs` entry that names a
    /// known step. Unknown names are validation's to report.
    pub fn new(plan: &Plan) -> Self {
        let mut graph = DiGraph::with_capacity(plan.steps.len(), plan.steps.len() * 3);
        let mut index = HashMap::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            graph.add_node(i);
            index.entry(step.id.value.as_str()).or_insert(i);
        }
        for (i, step) in plan.steps.iter().enumerate() {
            for need in &step.needs {
                if let Some(&dep) = index.get(need.value.as_str()) {
                    if graph
                        .find_edge(NodeIndex::new(dep), NodeIndex::new(i))
                        .is_none()
                    {
                        graph.add_edge(NodeIndex::new(dep), NodeIndex::new(i), ());
                    }
                }
            }
        }
        StepGraph { graph }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The steps `step` needs directly.
    pub fn dependencies(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(step), Direction::Incoming)
            .map(|n| n.index())
    }

    /// The steps that need `step` directly.
    pub fn dependents(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(step), Direction::Outgoing)
            .map(|n| n.index())
    }

    /// One cycle per strongly connected component that has one, each as a path
    /// in `needs` order that starts and ends at the same step: `[a, b, c, a]`
    /// where `a` needs `b`, `b` needs `c` and `c` needs `a`.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut cycles = Vec::new();
        // Kosaraju's walk is iterative; petgraph's Tarjan recurses once per step
        // on a chain and overflows the stack on plans with long ones.
        for component in petgraph::algo::kosaraju_scc(&self.graph) {
            let self_loop =
                component.len() == 1 && self.graph.contains_edge(component[0], component[0]);
            if component.len() < 2 && !self_loop {
                continue;
            }
            let mut members = FixedBitSet::with_capacity(self.len());
            component.iter().for_each(|n| members.insert(n.index()));
            let start = component
                .iter()
                .map(|n| n.index())
                .min()
                .unwrap_or_default();
            cycles.push(self.cycle_through(start, &members));
        }
        cycles.sort();
        cycles
    }

    /// The shortest path `start -> … -> start` along `needs`, inside `members`.
    fn cycle_through(&self, start: usize, members: &FixedBitSet) -> Vec<usize> {
        let mut previous: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut needs: Vec<usize> = self
                .dependencies(node)
                .filter(|n| members.contains(*n))
                .collect();
            needs.sort_unstable();
            for next in needs {
                if next == start {
                    let mut path = vec![node];
                    while let Some(&back) = previous.get(path.last().unwrap_or(&start)) {
                        path.push(back);
                    }
                    if path.last() != Some(&start) {
                        path.push(start);
                    }
                    path.reverse();
                    path.push(start);
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(entry) = previous.entry(next) {
                    entry.insert(node);
                    queue.push_back(next);
                }
            }
        }
        vec![start, start]
    }

    /// Every step that `step` depends on, directly or not.
    pub fn ancestors(&self, step: usize) -> FixedBitSet {
        let mut seen = FixedBitSet::with_capacity(self.len());
        let mut stack: Vec<usize> = self.dependencies(step).collect();
        while let Some(node) = stack.pop() {
            if !seen.put(node) {
                stack.extend(self.dependencies(node));
            }
        }
        seen
    }

    /// Every step that depends on one of `roots`, directly or not, plus the roots.
    pub fn descendants_of(&self, roots: impl IntoIterator<Item = usize>) -> FixedBitSet {
        let mut seen = FixedBitSet::with_capacity(self.len());
        let mut stack: Vec<usize> = roots.into_iter().collect();
        while let Some(node) = stack.pop() {
            if !seen.put(node) {
                stack.extend(self.dependents(node));
            }
        }
        seen
    }

    /// Steps in an order where each comes after all it needs; `None` with a cycle.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        petgraph::algo::toposort(&self.graph, None)
            .ok()
            .map(|order| order.into_iter().map(|n| n.index()).collect())
    }
}

/// What `phoenix plan` shows: the waves a run would execute and its critical path.
pub struct Schedule {
    /// Step indexes by wave: a step is in the wave after the last of its needs.
    /// Teardown steps come in waves of their own after every other step.
    pub waves: Vec<Vec<usize>>,
    /// The longest chain of non-teardown steps by duration.
    pub critical_path: Vec<usize>,
    /// The critical path's length: the predicted RTO.
    pub predicted: Duration,
}

/// Waves and critical path of the steps for which `included` holds, with each
/// step's expected duration from `duration`. The graph must be acyclic.
pub fn schedule(
    plan: &Plan,
    graph: &StepGraph,
    included: impl Fn(usize) -> bool,
    duration: impl Fn(usize) -> Duration,
) -> Schedule {
    let order = graph.topological_order().unwrap_or_default();
    let n = graph.len();
    let mut depth = vec![0usize; n];
    let mut finish = vec![Duration::ZERO; n];
    let mut best_previous: Vec<Option<usize>> = vec![None; n];
    let is_teardown = |i: usize| plan.steps[i].phase.value == Phase::Teardown;
    for &i in order.iter().filter(|&&i| included(i) && !is_teardown(i)) {
        let mut start = Duration::ZERO;
        for dep in graph.dependencies(i).filter(|&d| included(d)) {
            depth[i] = depth[i].max(depth[dep] + 1);
            if best_previous[i].is_none() || finish[dep] > start {
                start = finish[dep];
                best_previous[i] = Some(dep);
            }
        }
        finish[i] = start + duration(i);
    }
    let main_waves = order
        .iter()
        .filter(|&&i| included(i) && !is_teardown(i))
        .map(|&i| depth[i] + 1)
        .max()
        .unwrap_or(0);
    for &i in order.iter().filter(|&&i| included(i) && is_teardown(i)) {
        depth[i] = main_waves;
        for dep in graph
            .dependencies(i)
            .filter(|&d| included(d) && is_teardown(d))
        {
            depth[i] = depth[i].max(depth[dep] + 1);
        }
    }
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for i in (0..n).filter(|&i| included(i)) {
        if waves.len() <= depth[i] {
            waves.resize(depth[i] + 1, Vec::new());
        }
        waves[depth[i]].push(i);
    }
    waves.retain(|wave| !wave.is_empty());
    let end = (0..n)
        .filter(|&i| included(i) && !is_teardown(i))
        .max_by(|&a, &b| finish[a].cmp(&finish[b]).then(b.cmp(&a)));
    let mut critical_path = Vec::new();
    let mut at = end;
    while let Some(i) = at {
        critical_path.push(i);
        at = best_previous[i];
    }
    critical_path.reverse();
    Schedule {
        waves,
        predicted: end.map(|i| finish[i]).unwrap_or_default(),
        critical_path,
    }
}
