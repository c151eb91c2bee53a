//! Per-function flat and cumulative values, with `go tool pprof`'s exact semantics.
//!
//! - A sample's stack is walked leaf first with inlined calls expanded innermost first
//!   (the decode stage already laid frames out that way).
//! - Flat goes to the first frame: the innermost function of the leaf location.
//! - Cum goes once per sample to every distinct function on the stack, so recursion
//!   does not count a function twice.
//! - Functions are keyed by name, and a function only appears for a sample type if some
//!   sample with a non-zero value for that type passes through it (pprof skips
//!   zero-valued samples when it builds its graph).

use crate::decode::Profile;

/// Flat and cumulative totals per function for one or more sample types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTable {
    /// The sample type indices, in the order of each row's values.
    pub types: Vec<usize>,
    /// One row per function that some non-zero sample passes through.
    pub rows: Vec<FunctionRow>,
    /// Sum of all sample values per type (the profile total).
    pub totals: Vec<i64>,
}

/// One function's values, one entry per sample type of its [`FunctionTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    /// The function name, as in the profile.
    pub name: String,
    /// Value of samples whose leaf is this function.
    pub flat: Vec<i64>,
    /// Value of samples whose stack contains this function.
    pub cum: Vec<i64>,
    /// Per type: whether a non-zero sample passed through this function.
    pub present: Vec<bool>,
}

impl FunctionTable {
    /// The rows that `go tool pprof -sample_index` would list for `types[k]`.
    pub fn present_in(&self, k: usize) -> impl Iterator<Item = &FunctionRow> {
        self.rows.iter().filter(move |r| r.present[k])
    }
}

/// Aggregates `profile` by function for each sample type index in `types`.
///
/// Indices must be valid for the profile (callers look them up with
/// [`Profile::sample_index`]); an out-of-range index yields zeros rather than a panic.
pub fn by_function(profile: &Profile, types: &[usize]) -> FunctionTable {
    let mut acc = FunctionAccumulator::new(profile.functions.len(), types);
    for s in 0..profile.sample_count() {
        acc.add(profile.values(s), profile.stack(s));
    }
    acc.finish(&profile.functions)
}

/// Flat and cum per function, built one sample at a time, so that a caller can feed
/// samples straight from the wire ([`crate::decode::stream`]) without holding them.
#[derive(Debug, Clone)]
pub struct FunctionAccumulator {
    types: Vec<usize>,
    /// `flat`, `cum` and `present` hold `types.len()` entries per function.
    flat: Vec<i64>,
    cum: Vec<i64>,
    present: Vec<bool>,
    /// `seen[f] == n` when function `f` was already counted in cum for sample `n`.
    seen: Vec<u32>,
    /// Samples added so far, wrapping; `seen` is reset when it wraps.
    n: u32,
    totals: Vec<i64>,
    vals: Vec<i64>,
}

impl FunctionAccumulator {
    /// An empty accumulator for `n_funcs` functions and the sample type indices `types`.
    pub fn new(n_funcs: usize, types: &[usize]) -> Self {
        let k = types.len();
        Self {
            types: types.to_vec(),
            flat: vec![0; n_funcs * k],
            cum: vec![0; n_funcs * k],
            present: vec![false; n_funcs * k],
            seen: vec![0; n_funcs],
            n: 0,
            totals: vec![0; k],
            vals: vec![0; k],
        }
    }

    /// Adds one sample: its values (one per sample type of the profile) and its stack
    /// as function indices, leaf first, inlined calls expanded innermost first.
    pub fn add(&mut self, values: &[i64], mut frames: impl Iterator<Item = u32>) {
        let k = self.types.len();
        let mut any = false;
        for (j, &t) in self.types.iter().enumerate() {
            let v = values.get(t).copied().unwrap_or(0);
            self.vals[j] = v;
            self.totals[j] = self.totals[j].wrapping_add(v);
            any |= v != 0;
        }
        if !any {
            return;
        }
        let Some(leaf) = frames.next() else { return };
        self.n = self.n.wrapping_add(1);
        if self.n == 0 {
            self.seen.fill(0);
            self.n = 1;
        }
        let n = self.n;
        let base = leaf as usize * k;
        for j in 0..k {
            self.flat[base + j] = self.flat[base + j].wrapping_add(self.vals[j]);
        }
        if k == 1 {
            // The common case (inspect, one sample type) without the inner loops.
            let v = self.vals[0];
            for f in std::iter::once(leaf).chain(frames) {
                let f = f as usize;
                if self.seen[f] == n {
                    continue;
                }
                self.seen[f] = n;
                self.cum[f] = self.cum[f].wrapping_add(v);
                self.present[f] = true;
            }
            return;
        }
        for f in std::iter::once(leaf).chain(frames) {
            let f = f as usize;
            if self.seen[f] == n {
                continue;
            }
            self.seen[f] = n;
            let base = f * k;
            for j in 0..k {
                self.cum[base + j] = self.cum[base + j].wrapping_add(self.vals[j]);
                self.present[base + j] |= self.vals[j] != 0;
            }
        }
    }

    /// For the sample type at position `j` of `types` only: its total and the
    /// (name, flat, cum) of every function present for it, taking the names (the
    /// profile's function names, by index) rather than copying them.
    pub fn into_one_type(self, names: Vec<String>, j: usize) -> (i64, Vec<(String, i64, i64)>) {
        let k = self.types.len();
        let total = self.totals.get(j).copied().unwrap_or(0);
        if j >= k {
            return (total, Vec::new());
        }
        let rows = names
            .into_iter()
            .enumerate()
            .filter(|(f, _)| self.present[f * k + j])
            .map(|(f, name)| (name, self.flat[f * k + j], self.cum[f * k + j]))
            .collect();
        (total, rows)
    }

    /// The table, with `names` (the profile's function names, by index) for its rows.
    pub fn finish(self, names: &[String]) -> FunctionTable {
        let k = self.types.len();
        let rows = names
            .iter()
            .enumerate()
            .filter(|(f, _)| self.present[f * k..(f + 1) * k].iter().any(|&p| p))
            .map(|(f, name)| FunctionRow {
                name: name.clone(),
                flat: self.flat[f * k..(f + 1) * k].to_vec(),
                cum: self.cum[f * k..(f + 1) * k].to_vec(),
                present: self.present[f * k..(f + 1) * k].to_vec(),
            })
            .collect();
        FunctionTable {
            types: self.types,
            rows,
            totals: self.totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::profile::tests::Builder;

    fn row<'a>(t: &'a FunctionTable, name: &str) -> &'a FunctionRow {
        t.rows.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn flat_goes_to_innermost_inlined_function() {
        let mut b = Builder::new(&[("inuse_space", "bytes")]);
        let leaf = b.loc(&["main.makeBuffer", "main.retain"]);
        let root = b.loc(&["main.main"]);
        b.sample(&[leaf, root], &[100], &[]);
        let t = by_function(&b.profile(), &[0]);
        assert_eq!(row(&t, "main.makeBuffer").flat, [100]);
        assert_eq!(row(&t, "main.retain").flat, [0]);
        assert_eq!(row(&t, "main.retain").cum, [100]);
        assert_eq!(row(&t, "main.main").cum, [100]);
        assert_eq!(t.totals, [100]);
    }

    #[test]
    fn recursion_counts_once_in_cum() {
        let mut b = Builder::new(&[("inuse_space", "bytes")]);
        let r = b.loc(&["main.rec"]);
        let m = b.loc(&["main.main"]);
        b.sample(&[r, r, r, r, m], &[7], &[]);
        b.sample(&[r, m], &[3], &[]);
        let t = by_function(&b.profile(), &[0]);
        assert_eq!(row(&t, "main.rec").flat, [10]);
        assert_eq!(row(&t, "main.rec").cum, [10]);
        assert_eq!(row(&t, "main.main").cum, [10]);
    }

    #[test]
    fn zero_samples_do_not_create_rows_for_that_type() {
        let mut b = Builder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        let a = b.loc(&["main.freed"]);
        let c = b.loc(&["main.kept"]);
        b.sample(&[a], &[50, 0], &[]);
        b.sample(&[c], &[20, 20], &[]);
        let t = by_function(&b.profile(), &[0, 1]);
        let in_alloc: Vec<_> = t.present_in(0).map(|r| r.name.as_str()).collect();
        let in_inuse: Vec<_> = t.present_in(1).map(|r| r.name.as_str()).collect();
        assert_eq!(in_alloc, ["main.freed", "main.kept"]);
        assert_eq!(in_inuse, ["main.kept"]);
        assert_eq!(t.totals, [70, 20]);
    }

    #[test]
    fn same_name_in_two_functions_is_one_row() {
        let mut b = Builder::new(&[("x", "count")]);
        let l1 = b.loc(&["main.f"]);
        let l2 = b.loc(&["main.f"]);
        b.p.function.push(crate::decode::profile::pb::Function {
            id: 99,
            name: b.p.function[0].name,
            ..Default::default()
        });
        b.p.location[1].line[0].function_id = 99;
        b.sample(&[l1], &[1], &[]);
        b.sample(&[l2], &[2], &[]);
        let t = by_function(&b.profile(), &[0]);
        assert_eq!(t.rows.len(), 1);
        assert_eq!(row(&t, "main.f").flat, [3]);
    }

    #[test]
    fn empty_stacks_count_in_total_only() {
        let mut b = Builder::new(&[("x", "count")]);
        b.sample(&[], &[5], &[]);
        let t = by_function(&b.profile(), &[0]);
        assert!(t.rows.is_empty());
        assert_eq!(t.totals, [5]);
    }
}
