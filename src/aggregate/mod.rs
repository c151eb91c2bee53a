//! Aggregate stage: decoded profiles into metric families.
//!
//! Pure functions over values: per-function flat/cum ([`functions`]), goroutines per
//! stack ([`goroutines`]), cardinality limits ([`limit`]), and the metric families the
//! exporter serves ([`heap`], [`goroutine_families`]). The `target` label is added by
//! the expose stage, so everything here is independent of where a profile came from.

pub mod functions;
pub mod goroutines;
pub mod heap;
pub mod limit;
pub mod memstats;
pub mod states;

pub use functions::{FunctionRow, FunctionTable, by_function};
pub use goroutines::{GoroutineSummary, StackGroup, by_stack};
pub use heap::HeapSummary;

/// The label value that stands for every series folded by a cardinality limit.
pub const OTHER: &str = "(other)";

/// Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that can go up and down.
    Gauge,
    /// A value that only grows while the target process lives.
    Counter,
}

/// One series: label pairs (without `target`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label names and values, in exposition order.
    pub labels: Vec<(&'static str, String)>,
    /// The sample value.
    pub value: f64,
}

/// A metric family as the expose stage encodes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Full metric name, e.g. `pprof_heap_inuse_bytes`.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    /// TYPE.
    pub kind: Kind,
    /// The series.
    pub series: Vec<Series>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            series: Vec::new(),
        }
    }

    /// Adds a series.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.series.push(Series { labels, value });
    }
}

/// Limits that shape what the aggregate stage emits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Series kept per per-function or per-stack metric; the rest fold into `(other)`.
    pub top: usize,
    /// Longest stack text carried by `pprof_goroutine_stack_info`, in bytes.
    pub stack_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            top: 100,
            stack_text: 1024,
        }
    }
}

/// How many series a limit folded, per metric name.
pub type Dropped = Vec<(&'static str, usize)>;

/// The `top` largest stack groups of a summary (as indices into `summary.stacks`) and
/// the folded remainder.
fn top_stacks(summary: &GoroutineSummary, top: usize) -> limit::Limited<usize> {
    let items = summary
        .stacks
        .iter()
        .enumerate()
        .map(|(i, g)| (i, g.count))
        .collect();
    limit::top_n(items, top)
}

/// Goroutine families for one profile: per stack counts (folded to `limits.top`), the
/// stack text for each kept id, and whole-profile totals.
pub fn goroutine_families(
    summary: &GoroutineSummary,
    label_names: &[&'static str],
    limits: &Limits,
) -> (Vec<Family>, Dropped) {
    let mut counts = Family::new(
        "pprof_goroutines",
        Kind::Gauge,
        "Goroutines per stack, named by the blocking call site (first frame outside the runtime and standard library).",
    );
    let mut info = Family::new(
        "pprof_goroutine_stack_info",
        Kind::Gauge,
        "Always 1: the stack text (root first, ';'-separated, cut at the root end) of each stack_id in pprof_goroutines.",
    );
    let mut total = Family::new(
        "pprof_profile_goroutines",
        Kind::Gauge,
        "All goroutines in the last goroutine profile, unfolded.",
    );
    let mut stacks = Family::new(
        "pprof_profile_goroutine_stacks",
        Kind::Gauge,
        "Distinct stacks (by function names and promoted labels) in the last goroutine profile.",
    );
    total.push(Vec::new(), summary.total as f64);
    stacks.push(Vec::new(), summary.stacks.len() as f64);

    let limited = top_stacks(summary, limits.top);
    let mut infos_done = std::collections::HashSet::new();
    for (i, count) in &limited.kept {
        let g = &summary.stacks[*i];
        let id = g.id.to_string();
        let mut labels = vec![("function", g.function.clone()), ("stack_id", id.clone())];
        labels.extend(label_names.iter().copied().zip(g.labels.iter().cloned()));
        counts.push(labels, *count as f64);
        if infos_done.insert(g.id) {
            info.push(
                vec![
                    ("stack_id", id),
                    ("function", g.function.clone()),
                    (
                        "stack",
                        goroutines::stack_text(&g.frames, limits.stack_text),
                    ),
                ],
                1.0,
            );
        }
    }
    if let Some(other) = limited.other {
        let mut labels = vec![
            ("function", OTHER.to_owned()),
            ("stack_id", OTHER.to_owned()),
        ];
        labels.extend(label_names.iter().map(|n| (*n, String::new())));
        counts.push(labels, other as f64);
    }
    (
        vec![counts, info, total, stacks],
        vec![("pprof_goroutines", limited.dropped)],
    )
}

/// Families of the goroutine-leak profile: goroutines the GC proved can never wake, per
/// stack with the same function and stack_id rules as `pprof_goroutines`.
pub fn leaked_families(summary: &GoroutineSummary, limits: &Limits) -> (Vec<Family>, Dropped) {
    let mut leaked = Family::new(
        "pprof_goroutines_leaked",
        Kind::Gauge,
        "Goroutines the Go >= 1.26 goroutine-leak detector proved can never wake, per stack.",
    );
    let mut total = Family::new(
        "pprof_profile_goroutines_leaked",
        Kind::Gauge,
        "All leaked goroutines in the last goroutine-leak profile, unfolded.",
    );
    total.push(Vec::new(), summary.total as f64);
    let limited = top_stacks(summary, limits.top);
    for (i, count) in &limited.kept {
        let g = &summary.stacks[*i];
        leaked.push(
            vec![
                ("function", g.function.clone()),
                ("stack_id", g.id.to_string()),
            ],
            *count as f64,
        );
    }
    if let Some(other) = limited.other {
        leaked.push(
            vec![
                ("function", OTHER.to_owned()),
                ("stack_id", OTHER.to_owned()),
            ],
            other as f64,
        );
    }
    (
        vec![leaked, total],
        vec![("pprof_goroutines_leaked", limited.dropped)],
    )
}
