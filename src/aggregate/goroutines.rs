//! Goroutine profiles grouped by stack, each stack named by its blocking call site.
//!
//! A goroutine profile has one sample per distinct stack (and label set) with the
//! goroutine count as its value. Its leaf is almost always `runtime.gopark`, so the
//! useful "function" is the first frame from the leaf that belongs to neither the
//! runtime nor the standard library: the code that chose to block. Stacks are
//! identified by a hash of their function names, which stays the same across restarts
//! and builds (addresses and line numbers do not enter it).

use std::collections::HashMap;
use std::sync::Arc;

use crate::decode::Profile;

/// Stable identifier of a stack: FNV-1a 64 of its function names, leaf first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u64);

impl std::fmt::Display for StackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Goroutines that share a stack (and promoted label values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackGroup {
    /// Hash of the stack's function names.
    pub id: StackId,
    /// The blocking call site: see the module documentation.
    pub function: String,
    /// Function names, leaf first; shared with every other stack through the same
    /// function, so a profile's names are allocated once, not once per frame.
    pub frames: Vec<Arc<str>>,
    /// Goroutines on this stack.
    pub count: i64,
    /// Values of the promoted goroutine labels, in the order they were asked for
    /// (empty string when a goroutine lacks the label).
    pub labels: Vec<String>,
}

/// All stacks of one goroutine profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoroutineSummary {
    /// Total goroutines in the profile.
    pub total: i64,
    /// Groups, largest count first (ties by id).
    pub stacks: Vec<StackGroup>,
}

/// Top-level packages of the Go standard library (plus `vendor`, under which it keeps
/// its own copies of x/ packages). Module paths without a dot exist, so "no dot in the
/// first element" alone would misclassify them.
const STD_ROOTS: &[&str] = &[
    "archive",
    "bufio",
    "builtin",
    "bytes",
    "cmp",
    "compress",
    "container",
    "context",
    "crypto",
    "database",
    "debug",
    "embed",
    "encoding",
    "errors",
    "expvar",
    "flag",
    "fmt",
    "go",
    "hash",
    "html",
    "image",
    "index",
    "internal",
    "io",
    "iter",
    "log",
    "maps",
    "math",
    "mime",
    "net",
    "os",
    "path",
    "plugin",
    "reflect",
    "regexp",
    "runtime",
    "slices",
    "sort",
    "strconv",
    "strings",
    "structs",
    "sync",
    "syscall",
    "testing",
    "text",
    "time",
    "unicode",
    "unique",
    "unsafe",
    "vendor",
    "weak",
];

/// The import path of the package a Go function symbol belongs to:
/// `net/http.(*conn).serve` -> `net/http`, `main.f.func1` -> `main`.
pub fn package_of(function: &str) -> &str {
    let last_slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[last_slash..].find('.') {
        Some(dot) => &function[..last_slash + dot],
        None => function,
    }
}

fn is_runtime(function: &str) -> bool {
    let pkg = package_of(function);
    pkg == "runtime" || pkg.starts_with("runtime/internal") || pkg.starts_with("internal/runtime")
}

fn is_std(function: &str) -> bool {
    let pkg = package_of(function);
    let root = pkg.split('/').next().unwrap_or(pkg);
    STD_ROOTS.contains(&root)
}

/// The blocking call site of a stack given leaf first: the first frame outside the
/// runtime and the standard library, else the first frame outside the runtime, else
/// the leaf.
pub fn blocking_function<'a>(frames: &[&'a str]) -> &'a str {
    frames
        .iter()
        .find(|f| !is_std(f))
        .or_else(|| frames.iter().find(|f| !is_runtime(f)))
        .or(frames.first())
        .copied()
        .unwrap_or("(unknown)")
}

/// FNV-1a 64 over the names, each followed by a separator byte that no symbol holds.
pub fn stack_id<'a>(frames: impl IntoIterator<Item = &'a str>) -> StackId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for name in frames {
        for &b in name.as_bytes().iter().chain(&[0xffu8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    StackId(h)
}

/// The stack as text, root first, `;`-separated (the folded-stack convention), cut
/// to at most `max_len` bytes by dropping frames from the root end, which is the
/// least specific part; a cut stack starts with `...;`.
pub fn stack_text<S: AsRef<str>>(frames_leaf_first: &[S], max_len: usize) -> String {
    let root_first = |frames: &[S]| {
        frames
            .iter()
            .rev()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(";")
    };
    let full = root_first(frames_leaf_first);
    if full.len() <= max_len {
        return full;
    }
    let budget = max_len.saturating_sub(4);
    let mut kept = 0;
    let mut len = 0;
    for f in frames_leaf_first {
        let add = f.as_ref().len() + usize::from(kept > 0);
        if len + add > budget {
            break;
        }
        len += add;
        kept += 1;
    }
    format!("...;{}", root_first(&frames_leaf_first[..kept]))
}

/// Longest promoted label value kept, in bytes: label values come from the target's
/// code and could be request ids; the top-N limit bounds how many, this bounds how big.
pub const MAX_LABEL_VALUE: usize = 128;

fn bounded_label_value(v: &str) -> String {
    let mut end = v.len().min(MAX_LABEL_VALUE);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_owned()
}

/// Groups goroutine samples by stack (and promoted label values) as they are read,
/// from a decoded [`Profile`] or straight off the wire.
pub struct StackAccumulator<'p, N = String> {
    groups: HashMap<(StackId, Vec<String>), StackGroup>,
    total: i64,
    functions: &'p [N],
    promote: &'p [String],
    names: Vec<&'p str>,
    // Shared names, made on first use: a stack group holds references, not copies.
    shared: Vec<Option<Arc<str>>>,
}

impl<'p, N: AsRef<str>> StackAccumulator<'p, N> {
    /// An empty accumulator over a profile's function names.
    pub fn new(functions: &'p [N], promote: &'p [String]) -> Self {
        Self {
            groups: HashMap::new(),
            total: 0,
            functions,
            promote,
            names: Vec::new(),
            shared: vec![None; functions.len()],
        }
    }

    /// Adds one sample: its goroutine count, its stack as function indices (leaf
    /// first), and a lookup of its string labels.
    pub fn add<'l>(&mut self, count: i64, stack: &[u32], label: impl Fn(&str) -> Option<&'l str>) {
        self.total = self.total.wrapping_add(count);
        self.names.clear();
        let functions = self.functions;
        self.names
            .extend(stack.iter().map(|&f| functions[f as usize].as_ref()));
        let id = stack_id(self.names.iter().copied());
        let labels: Vec<String> = self
            .promote
            .iter()
            .map(|key| label(key).map(bounded_label_value).unwrap_or_default())
            .collect();
        let names = &self.names;
        let shared = &mut self.shared;
        self.groups
            .entry((id, labels))
            .and_modify(|g| g.count = g.count.wrapping_add(count))
            .or_insert_with_key(|(id, labels)| StackGroup {
                id: *id,
                function: blocking_function(names).to_owned(),
                frames: stack
                    .iter()
                    .map(|&f| {
                        shared[f as usize]
                            .get_or_insert_with(|| Arc::from(functions[f as usize].as_ref()))
                            .clone()
                    })
                    .collect(),
                count,
                labels: labels.clone(),
            });
    }

    /// The groups, most goroutines first.
    pub fn finish(self) -> GoroutineSummary {
        let mut stacks: Vec<StackGroup> = self.groups.into_values().collect();
        stacks.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.id.cmp(&b.id))
                .then_with(|| a.labels.cmp(&b.labels))
        });
        GoroutineSummary {
            total: self.total,
            stacks,
        }
    }
}

/// Groups a goroutine profile by stack. `promote` names goroutine labels whose values
/// split the groups further (and are reported with them).
pub fn by_stack(profile: &Profile, promote: &[String]) -> GoroutineSummary {
    let value_index = profile.default_index().unwrap_or(0);
    let mut acc = StackAccumulator::new(&profile.functions, promote);
    let mut stack: Vec<u32> = Vec::new();
    for s in 0..profile.sample_count() {
        let count = profile.values(s).get(value_index).copied().unwrap_or(0);
        stack.clear();
        stack.extend(profile.stack(s));
        let labels = profile.labels(s);
        acc.add(count, &stack, |key| {
            labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        });
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::profile::tests::Builder;

    #[test]
    fn package_paths() {
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(package_of("main.worker.func1"), "main");
        assert_eq!(package_of("github.com/a/b.(*T).M"), "github.com/a/b");
        assert_eq!(package_of("gopkg.in/yaml.v3.Unmarshal"), "gopkg.in/yaml");
        assert_eq!(package_of("weird"), "weird");
    }

    #[test]
    fn blocking_site_skips_runtime_and_std() {
        let frames = [
            "runtime.gopark",
            "runtime.chansend",
            "main.send.func1",
            "runtime.goexit",
        ];
        assert_eq!(blocking_function(&frames), "main.send.func1");
        let frames = [
            "runtime.gopark",
            "internal/poll.(*FD).Read",
            "myapp/db.Query",
        ];
        assert_eq!(blocking_function(&frames), "myapp/db.Query");
        let frames = ["runtime.gopark", "net/http.(*conn).serve", "runtime.goexit"];
        assert_eq!(blocking_function(&frames), "net/http.(*conn).serve");
        assert_eq!(blocking_function(&["runtime.gopark"]), "runtime.gopark");
        assert_eq!(blocking_function(&[]), "(unknown)");
    }

    #[test]
    fn stack_id_depends_on_names_and_order_only() {
        let a = stack_id(["runtime.gopark", "main.f"]);
        assert_eq!(a, stack_id(["runtime.gopark", "main.f"]));
        assert_ne!(a, stack_id(["main.f", "runtime.gopark"]));
        assert_ne!(stack_id(["ab", "c"]), stack_id(["a", "bc"]));
        // Pinned: a changed hash would break every stored series and dashboard link.
        assert_eq!(stack_id(["runtime.gopark", "main.f"]).to_string().len(), 16);
        assert_eq!(stack_id([]).to_string(), "cbf29ce484222325");
    }

    #[test]
    fn stack_text_keeps_the_leaf_end() {
        let frames: Vec<String> = ["runtime.gopark", "main.wait", "main.main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            stack_text(&frames, 1000),
            "main.main;main.wait;runtime.gopark"
        );
        let cut = stack_text(&frames, 30);
        assert_eq!(cut, "...;main.wait;runtime.gopark");
        assert!(cut.len() <= 30);
        assert_eq!(stack_text(&frames, 5), "...;");
    }

    #[test]
    fn groups_by_names_and_promoted_labels() {
        let mut b = Builder::new(&[("goroutine", "count")]);
        let park = b.loc(&["runtime.gopark"]);
        let w1 = b.loc(&["main.worker"]);
        let w2 = b.loc(&["main.worker"]); // another line in the same function
        b.sample(&[park, w1], &[3], &[("pool", "a")]);
        b.sample(&[park, w2], &[4], &[("pool", "b")]);
        b.sample(&[park, w2], &[1], &[("pool", "a")]);
        let p = b.profile();

        let plain = by_stack(&p, &[]);
        assert_eq!(plain.total, 8);
        assert_eq!(plain.stacks.len(), 1);
        assert_eq!(plain.stacks[0].count, 8);
        assert_eq!(plain.stacks[0].function, "main.worker");
        let frames: Vec<&str> = plain.stacks[0].frames.iter().map(AsRef::as_ref).collect();
        assert_eq!(frames, ["runtime.gopark", "main.worker"]);

        let split = by_stack(&p, &["pool".to_owned(), "absent".to_owned()]);
        let counts: Vec<_> = split
            .stacks
            .iter()
            .map(|g| (g.labels.clone(), g.count))
            .collect();
        assert_eq!(
            counts,
            [
                (vec!["a".to_owned(), String::new()], 4),
                (vec!["b".to_owned(), String::new()], 4)
            ]
        );
    }
}
