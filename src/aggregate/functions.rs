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
    /// `types.len()` cells per function. A stack visits functions in no useful order,
    /// so everything a frame touches sits in one cell rather than in parallel arrays.
    cells: Vec<Cell>,
    /// Samples added so far, wrapping; every `seen` is reset when it wraps.
    n: u32,
    totals: Vec<i64>,
    vals: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    flat: i64,
    cum: i64,
    /// In a function's first cell only: `n` of the last sample counted in its cum.
    seen: u32,
    /// Whether a non-zero sample passed through the function.
    present: bool,
}

impl FunctionAccumulator {
    /// An empty accumulator for `n_funcs` functions and the sample type indices `types`.
    pub fn new(n_funcs: usize, types: &[usize]) -> Self {
        let k = types.len();
        Self {
            types: types.to_vec(),
            cells: vec![Cell::default(); n_funcs * k],
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
            for c in self.cells.iter_mut().step_by(k.max(1)) {
                c.seen = 0;
            }
            self.n = 1;
        }
        let n = self.n;
        let base = leaf as usize * k;
        for j in 0..k {
            self.cells[base + j].flat = self.cells[base + j].flat.wrapping_add(self.vals[j]);
        }
        if k == 1 {
            // The common case (inspect, one sample type) without the inner loops, and
            // without a branch on whether the function was met before in this stack:
            // a frame met again adds 0. `v` is not 0 here, so every cell visited is
            // present.
            let v = self.vals[0];
            for f in std::iter::once(leaf).chain(frames) {
                let c = &mut self.cells[f as usize];
                let again = c.seen == n;
                c.seen = n;
                c.cum = c.cum.wrapping_add(if again { 0 } else { v });
                c.present = true;
            }
            return;
        }
        for f in std::iter::once(leaf).chain(frames) {
            let base = f as usize * k;
            if self.cells[base].seen == n {
                continue;
            }
            self.cells[base].seen = n;
            for (c, &v) in self.cells[base..base + k].iter_mut().zip(&self.vals) {
                c.cum = c.cum.wrapping_add(v);
                c.present |= v != 0;
            }
        }
    }

    /// Adds what `other`, an accumulator for the same functions and sample types fed
    /// other samples, has counted: flat, cum and totals add up, presence combines.
    pub fn merge(&mut self, other: &FunctionAccumulator) {
        debug_assert_eq!(self.types, other.types);
        for (c, o) in self.cells.iter_mut().zip(&other.cells) {
            c.flat = c.flat.wrapping_add(o.flat);
            c.cum = c.cum.wrapping_add(o.cum);
            c.present |= o.present;
        }
        for (t, o) in self.totals.iter_mut().zip(&other.totals) {
            *t = t.wrapping_add(*o);
        }
    }

    /// For the sample type at position `j` of `types`: the sum of flat over every
    /// function, which is the total less the samples with no frames.
    pub fn flat_sum(&self, j: usize) -> i64 {
        let k = self.types.len();
        if j >= k {
            return 0;
        }
        let cells = self.cells.iter().skip(j).step_by(k);
        cells.fold(0i64, |sum, c| sum.wrapping_add(c.flat))
    }

    /// For the sample type at position `j` of `types` only: its total, the
    /// (name, flat, cum) of every function present for it whose |cum| is at least
    /// `min_cum`, and how many present functions were left out for being below it.
    /// `names` are the profile's function names, by index, and come back as they are:
    /// borrowed names stay borrowed.
    pub fn into_one_type<N>(
        self,
        names: impl IntoIterator<Item = N>,
        j: usize,
        min_cum: u64,
    ) -> (i64, Vec<(N, i64, i64)>, usize) {
        let k = self.types.len();
        let total = self.totals.get(j).copied().unwrap_or(0);
        if j >= k {
            return (total, Vec::new(), 0);
        }
        let cells = || self.cells.iter().skip(j).step_by(k).filter(|c| c.present);
        let kept = |c: &&Cell| c.cum.unsigned_abs() >= min_cum;
        // Counted first: a filtered collect grows by doubling, and with every name
        // kept the last doubling holds both copies at once.
        let n_kept = cells().filter(kept).count();
        let dropped = cells().count() - n_kept;
        let mut rows = Vec::with_capacity(n_kept);
        rows.extend(
            names
                .into_iter()
                .zip(self.cells.iter().skip(j).step_by(k))
                .filter(|(_, c)| c.present && kept(c))
                .map(|(name, c)| (name, c.flat, c.cum)),
        );
        (total, rows, dropped)
    }

    /// The table, with `names` (the profile's function names, by index) for its rows.
    pub fn finish(self, names: &[impl AsRef<str>]) -> FunctionTable {
        let k = self.types.len();
        let rows = if k == 0 {
            Vec::new()
        } else {
            names
                .iter()
                .zip(self.cells.chunks_exact(k))
                .filter(|(_, cells)| cells.iter().any(|c| c.present))
                .map(|(name, cells)| FunctionRow {
                    name: name.as_ref().to_owned(),
                    flat: cells.iter().map(|c| c.flat).collect(),
                    cum: cells.iter().map(|c| c.cum).collect(),
                    present: cells.iter().map(|c| c.present).collect(),
                })
                .collect()
        };
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

#[cfg(test)]
mod merge_tests {
    use prost::Message;

    use super::*;
    use crate::decode::decode_profile;
    use crate::decode::profile::DecodeLimits;
    use crate::synth::{SynthConfig, SynthKind, generate};

    #[test]
    fn accumulators_fed_halves_merge_into_the_whole() {
        let bytes = generate(&SynthConfig {
            kind: SynthKind::Heap,
            seed: 3,
            samples: 2000,
            functions: 200,
            max_depth: 16,
        })
        .encode_to_vec();
        let p = decode_profile(&bytes, DecodeLimits::default()).unwrap();
        for types in [vec![1], vec![0, 1, 2, 3]] {
            let whole = by_function(&p, &types);
            let n = p.functions.len();
            for cut in [0, 1, 999, p.sample_count()] {
                let mut a = FunctionAccumulator::new(n, &types);
                let mut b = FunctionAccumulator::new(n, &types);
                for s in 0..p.sample_count() {
                    let acc = if s < cut { &mut a } else { &mut b };
                    acc.add(p.values(s), p.stack(s));
                }
                a.merge(&b);
                assert_eq!(
                    a.finish(&p.functions),
                    whole,
                    "types {types:?}, cut at {cut}"
                );
            }
        }
        // Something is counted: the comparison above is not between empty tables.
        assert!(by_function(&p, &[1]).rows.len() > 100);
    }
}
