//! The pprof protobuf profile, decoded and resolved into a compact, validated form.
//!
//! The wire format (`proto/profile.proto`) is read in one pass by [`super::stream`],
//! which checks every index and id once, so that later stages can walk stacks without
//! bounds surprises: a hostile or corrupt profile becomes a [`DecodeError`], never a
//! panic. The prost types generated from the same file remain for writers (the
//! synthetic profiles) and for ranking a wire error above a reference error.
//! Inlined frames are expanded per location once (innermost first, as `go tool pprof`
//! does); samples keep references to locations rather than copies of their frames.

use std::borrow::Cow;
#[cfg(test)]
use std::collections::HashMap;

#[cfg(test)]
use prost::Message;

use super::DecodeError;

/// The generated protobuf types for `proto/profile.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// Bounds applied while resolving a profile, on top of the byte limits of the caller.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The most stack frames (after inline expansion, summed over samples) a profile may
    /// hold; this bounds the work of every later pass over the stacks.
    pub max_frames: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_frames: 64 << 20,
        }
    }
}

/// What one entry of a sample's values measures, e.g. `inuse_space` in `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueType {
    /// The sample type name (`inuse_space`, `goroutine`, ...).
    pub kind: String,
    /// Its unit (`bytes`, `count`, ...).
    pub unit: String,
}

/// A decoded profile with resolved names and validated references.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// The sample types, in value order.
    pub sample_types: Vec<ValueType>,
    /// Index into `sample_types` of the profile's declared default, if it names one.
    pub default_sample_type: Option<usize>,
    /// Distinct function names; frames refer to them by index.
    pub functions: Vec<String>,
    /// When the profile was taken, in nanoseconds since the Unix epoch (0 if unset).
    pub time_nanos: i64,
    /// Per location, and one past the last: where its frames start in `loc_frames`.
    loc_starts: Vec<u32>,
    /// Function indices of every location's lines, innermost first.
    loc_frames: Vec<u32>,
    /// Per sample: the range of `sample_locs` holding its locations, leaf first.
    sample_ranges: Vec<(u32, u32)>,
    /// Location indices of every sample.
    sample_locs: Vec<u32>,
    /// Sample values, `sample_types.len()` per sample.
    values: Vec<i64>,
    /// String labels per sample; empty when no sample has any.
    labels: Vec<Vec<(String, String)>>,
}

impl Profile {
    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.sample_ranges.len()
    }

    /// The values of sample `i`, one per sample type.
    pub fn values(&self, i: usize) -> &[i64] {
        let n = self.sample_types.len();
        &self.values[i * n..(i + 1) * n]
    }

    /// The string labels of sample `i` (goroutine labels set with `pprof.Do`).
    pub fn labels(&self, i: usize) -> &[(String, String)] {
        self.labels.get(i).map_or(&[], Vec::as_slice)
    }

    /// The function indices of sample `i`'s stack, leaf first, inlined calls expanded
    /// innermost first.
    pub fn stack(&self, i: usize) -> impl Iterator<Item = u32> + '_ {
        let (start, end) = self.sample_ranges[i];
        self.sample_locs[start as usize..end as usize]
            .iter()
            .flat_map(move |&loc| {
                let (s, e) = (
                    self.loc_starts[loc as usize],
                    self.loc_starts[loc as usize + 1],
                );
                self.loc_frames[s as usize..e as usize].iter().copied()
            })
    }

    /// Index of the sample type called `name`, or whose position is `name` as a number.
    pub fn sample_index(&self, name: &str) -> Option<usize> {
        self.sample_types
            .iter()
            .position(|t| t.kind == name)
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|&i| i < self.sample_types.len())
            })
    }

    /// The sample type `go tool pprof` shows when none is asked for: the declared
    /// default, else the last one.
    pub fn default_index(&self) -> Option<usize> {
        self.default_sample_type
            .or_else(|| self.sample_types.len().checked_sub(1))
    }
}

/// Decodes an uncompressed protobuf profile and resolves it.
///
/// One pass over the wire format ([`super::stream`]): tables are resolved first, then
/// each sample is checked and appended to the compact form directly.
pub fn decode_profile(bytes: &[u8], limits: DecodeLimits) -> Result<Profile, DecodeError> {
    super::stream::wire_error_first(bytes, build(bytes, limits))
}

fn build(bytes: &[u8], limits: DecodeLimits) -> Result<Profile, DecodeError> {
    let d = super::stream::open(bytes)?;
    let n = d.sample_count();
    let mut sample_ranges = Vec::with_capacity(n);
    let mut sample_locs = Vec::new();
    let mut values = Vec::with_capacity(n * d.sample_types.len());
    let mut labels: Vec<Vec<(String, String)>> = Vec::new();
    let mut too_many = false;
    d.samples(limits, |s| {
        values.extend_from_slice(s.values);
        let start = sample_locs.len();
        sample_locs.extend_from_slice(s.locations);
        match (u32::try_from(start), u32::try_from(sample_locs.len())) {
            (Ok(a), Ok(b)) => sample_ranges.push((a, b)),
            _ => too_many = true,
        }
        if !s.labels.is_empty() {
            labels.resize_with(s.index, Vec::new);
            labels.push(
                s.labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
        }
    })?;
    if too_many {
        return Err(invalid("too many sample locations"));
    }
    Ok(Profile {
        sample_types: d.sample_types,
        default_sample_type: d.default_sample_type,
        functions: d.functions.into_iter().map(Cow::into_owned).collect(),
        time_nanos: d.time_nanos,
        loc_starts: d.loc_starts,
        loc_frames: d.loc_frames,
        sample_ranges,
        sample_locs,
        values,
        labels,
    })
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

/// The previous decoder: every prost message materialised, then resolved. Kept as
/// the reference the single-pass decoder is compared with.
#[cfg(test)]
pub(crate) fn decode_profile_prost(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<Profile, DecodeError> {
    let raw = pb::Profile::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    resolve(raw, limits)
}

#[cfg(test)]
fn u32_of(n: usize, what: &str) -> Result<u32, DecodeError> {
    u32::try_from(n).map_err(|_| invalid(format!("too many {what}")))
}

/// Checks every cross-reference of a wire profile and builds the compact form.
#[cfg(test)]
fn resolve(raw: pb::Profile, limits: DecodeLimits) -> Result<Profile, DecodeError> {
    let strings = raw.string_table;
    let string = |idx: i64, what: &str| -> Result<&str, DecodeError> {
        usize::try_from(idx)
            .ok()
            .and_then(|i| strings.get(i))
            .map(String::as_str)
            .ok_or_else(|| invalid(format!("{what} refers to string {idx}, outside the table")))
    };

    let sample_types = raw
        .sample_type
        .iter()
        .map(|vt| {
            Ok(ValueType {
                kind: string(vt.r#type, "sample type")?.to_owned(),
                unit: string(vt.unit, "sample unit")?.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    if sample_types.is_empty() && !raw.sample.is_empty() {
        return Err(invalid("samples present but no sample types"));
    }
    let default_sample_type = if raw.default_sample_type == 0 {
        None
    } else {
        let name = string(raw.default_sample_type, "default sample type")?;
        sample_types.iter().position(|t| t.kind == name)
    };

    // Functions: wire id -> interned name index.
    let mut functions: Vec<String> = Vec::new();
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut func_ids: HashMap<u64, u32> = HashMap::with_capacity(raw.function.len());
    for f in &raw.function {
        if f.id == 0 {
            return Err(invalid("function with id 0"));
        }
        let name = string(f.name, "function name")?;
        let idx = match by_name.get(name) {
            Some(&i) => i,
            None => {
                let i = u32_of(functions.len(), "functions")?;
                functions.push(name.to_owned());
                by_name.insert(name.to_owned(), i);
                i
            }
        };
        if func_ids.insert(f.id, idx).is_some() {
            return Err(invalid(format!("duplicate function id {}", f.id)));
        }
    }

    // Locations: wire id -> index; each location's lines expanded innermost first.
    let mut loc_ids: HashMap<u64, u32> = HashMap::with_capacity(raw.location.len());
    let mut loc_starts = Vec::with_capacity(raw.location.len() + 1);
    let mut loc_frames = Vec::with_capacity(raw.location.len());
    loc_starts.push(0);
    for loc in &raw.location {
        if loc.id == 0 {
            return Err(invalid("location with id 0"));
        }
        if loc.line.is_empty() {
            // An unsymbolised location: named by its address, as pprof prints it.
            let name = format!("{:016x}", loc.address);
            let idx = match by_name.get(&name) {
                Some(&i) => i,
                None => {
                    let i = u32_of(functions.len(), "functions")?;
                    functions.push(name.clone());
                    by_name.insert(name, i);
                    i
                }
            };
            loc_frames.push(idx);
        }
        for line in &loc.line {
            let idx = *func_ids.get(&line.function_id).ok_or_else(|| {
                invalid(format!(
                    "location {} refers to unknown function {}",
                    loc.id, line.function_id
                ))
            })?;
            loc_frames.push(idx);
        }
        let idx = u32_of(loc_starts.len() - 1, "locations")?;
        loc_starts.push(u32_of(loc_frames.len(), "frames")?);
        if loc_ids.insert(loc.id, idx).is_some() {
            return Err(invalid(format!("duplicate location id {}", loc.id)));
        }
    }

    let n_types = sample_types.len();
    let mut sample_ranges = Vec::with_capacity(raw.sample.len());
    let mut sample_locs = Vec::new();
    let mut values = Vec::with_capacity(raw.sample.len() * n_types);
    let mut labels: Vec<Vec<(String, String)>> = Vec::new();
    let mut total_frames: u64 = 0;
    for (i, s) in raw.sample.iter().enumerate() {
        if s.value.len() != n_types {
            return Err(invalid(format!(
                "sample {i} has {} values for {n_types} sample types",
                s.value.len()
            )));
        }
        values.extend_from_slice(&s.value);
        let start = u32_of(sample_locs.len(), "sample locations")?;
        for id in &s.location_id {
            let idx = *loc_ids
                .get(id)
                .ok_or_else(|| invalid(format!("sample {i} refers to unknown location {id}")))?;
            let (a, b) = (loc_starts[idx as usize], loc_starts[idx as usize + 1]);
            total_frames += u64::from(b - a);
            sample_locs.push(idx);
        }
        if total_frames > limits.max_frames {
            return Err(DecodeError::TooLarge {
                limit: limits.max_frames,
            });
        }
        sample_ranges.push((start, u32_of(sample_locs.len(), "sample locations")?));
        let mut sample_labels = Vec::new();
        for l in &s.label {
            if l.str != 0 {
                sample_labels.push((
                    string(l.key, "label key")?.to_owned(),
                    string(l.str, "label value")?.to_owned(),
                ));
            }
        }
        if !sample_labels.is_empty() {
            labels.resize_with(i, Vec::new);
            labels.push(sample_labels);
        }
    }

    Ok(Profile {
        sample_types,
        default_sample_type,
        functions,
        time_nanos: raw.time_nanos,
        loc_starts,
        loc_frames,
        sample_ranges,
        sample_locs,
        values,
        labels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::stream;

    /// A small builder for hand-made wire profiles: functions by name, locations as
    /// lists of function names (innermost first), samples as lists of location ids.
    #[derive(Default)]
    pub(crate) struct Builder {
        pub(crate) p: pb::Profile,
    }

    impl Builder {
        pub(crate) fn new(types: &[(&str, &str)]) -> Self {
            let mut b = Self::default();
            b.p.string_table.push(String::new());
            for (t, u) in types {
                let vt = pb::ValueType {
                    r#type: b.s(t),
                    unit: b.s(u),
                };
                b.p.sample_type.push(vt);
            }
            b
        }

        pub(crate) fn s(&mut self, v: &str) -> i64 {
            if let Some(i) = self.p.string_table.iter().position(|x| x == v) {
                return i as i64;
            }
            self.p.string_table.push(v.to_owned());
            (self.p.string_table.len() - 1) as i64
        }

        fn func(&mut self, name: &str) -> u64 {
            let n = self.s(name);
            if let Some(f) = self.p.function.iter().find(|f| f.name == n) {
                return f.id;
            }
            let id = self.p.function.len() as u64 + 1;
            self.p.function.push(pb::Function {
                id,
                name: n,
                ..Default::default()
            });
            id
        }

        /// Adds a location whose lines are `names`, innermost first; returns its id.
        pub(crate) fn loc(&mut self, names: &[&str]) -> u64 {
            let line = names
                .iter()
                .map(|n| pb::Line {
                    function_id: self.func(n),
                    line: 1,
                    column: 0,
                })
                .collect();
            let id = self.p.location.len() as u64 + 1;
            self.p.location.push(pb::Location {
                id,
                line,
                ..Default::default()
            });
            id
        }

        pub(crate) fn sample(&mut self, locs: &[u64], values: &[i64], labels: &[(&str, &str)]) {
            let label = labels
                .iter()
                .map(|(k, v)| pb::Label {
                    key: self.s(k),
                    str: self.s(v),
                    ..Default::default()
                })
                .collect();
            self.p.sample.push(pb::Sample {
                location_id: locs.to_vec(),
                value: values.to_vec(),
                label,
            });
        }

        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.p.encode_to_vec()
        }

        pub(crate) fn profile(&self) -> Profile {
            decode_profile(&self.bytes(), DecodeLimits::default()).unwrap()
        }
    }

    fn names(p: &Profile, i: usize) -> Vec<&str> {
        p.stack(i)
            .map(|f| p.functions[f as usize].as_str())
            .collect()
    }

    #[test]
    fn expands_inlined_lines_innermost_first() {
        let mut b = Builder::new(&[("inuse_space", "bytes")]);
        let leaf = b.loc(&["main.inner", "main.outer"]);
        let root = b.loc(&["main.main"]);
        b.sample(&[leaf, root], &[10], &[]);
        let p = b.profile();
        assert_eq!(names(&p, 0), ["main.inner", "main.outer", "main.main"]);
        assert_eq!(p.values(0), [10]);
    }

    #[test]
    fn keeps_string_labels_and_skips_numeric_ones() {
        let mut b = Builder::new(&[("goroutine", "count")]);
        let l = b.loc(&["main.w"]);
        b.sample(&[l], &[1], &[]);
        b.sample(&[l], &[2], &[("worker", "ingest")]);
        let num_key = b.s("bytes");
        b.p.sample[0].label.push(pb::Label {
            key: num_key,
            num: 64,
            ..Default::default()
        });
        let p = b.profile();
        assert!(p.labels(0).is_empty());
        assert_eq!(p.labels(1), [("worker".to_owned(), "ingest".to_owned())]);
    }

    #[test]
    fn sample_index_by_name_number_and_default() {
        let mut b = Builder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        assert_eq!(b.profile().default_index(), Some(1));
        assert_eq!(b.profile().sample_index("alloc_space"), Some(0));
        assert_eq!(b.profile().sample_index("1"), Some(1));
        assert_eq!(b.profile().sample_index("2"), None);
        b.p.default_sample_type = b.s("alloc_space");
        assert_eq!(b.profile().default_index(), Some(0));
    }

    fn err_of(b: &Builder) -> String {
        decode_profile(&b.bytes(), DecodeLimits::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn rejects_inconsistent_references() {
        let mut b = Builder::new(&[("x", "count")]);
        let l = b.loc(&["f"]);
        b.sample(&[l + 1], &[1], &[]);
        assert!(err_of(&b).contains("unknown location"), "{}", err_of(&b));

        let mut b = Builder::new(&[("x", "count")]);
        let l = b.loc(&["f"]);
        b.sample(&[l], &[1, 2], &[]);
        assert!(err_of(&b).contains("2 values for 1 sample types"));

        let mut b = Builder::new(&[("x", "count")]);
        b.loc(&["f"]);
        b.p.function[0].name = 99;
        assert!(err_of(&b).contains("outside the table"));

        let mut b = Builder::new(&[("x", "count")]);
        b.loc(&["f"]);
        b.p.location[0].line[0].function_id = 7;
        assert!(err_of(&b).contains("unknown function 7"));

        let mut b = Builder::new(&[("x", "count")]);
        b.loc(&["f"]);
        b.loc(&["g"]);
        b.p.location[1].id = 1;
        assert!(err_of(&b).contains("duplicate location id 1"));

        let mut b = Builder::new(&[("x", "count")]);
        b.loc(&["f"]);
        b.p.location[0].id = 0;
        assert!(err_of(&b).contains("id 0"));
    }

    #[test]
    fn bounds_expanded_frames() {
        let mut b = Builder::new(&[("x", "count")]);
        let l = b.loc(&["a", "b", "c"]);
        for _ in 0..10 {
            b.sample(&[l, l], &[1], &[]);
        }
        let limits = DecodeLimits { max_frames: 59 };
        assert_eq!(
            decode_profile(&b.bytes(), limits).unwrap_err(),
            DecodeError::TooLarge { limit: 59 }
        );
        assert!(decode_profile(&b.bytes(), DecodeLimits { max_frames: 60 }).is_ok());
    }

    #[test]
    fn garbage_is_a_protobuf_error() {
        assert!(matches!(
            decode_profile(b"\xff\xff\xff\xff", DecodeLimits::default()),
            Err(DecodeError::Protobuf(_))
        ));
    }

    /// Wire profiles that exercise every table: inlining, an unsymbolised location,
    /// string and numeric labels, a default sample type, and generated heap and
    /// goroutine profiles.
    fn corpus() -> Vec<Vec<u8>> {
        let mut b = Builder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        let a = b.loc(&["main.inner", "main.outer"]);
        let m = b.loc(&["main.main"]);
        b.sample(&[a, m], &[10, 5], &[("worker", "w1")]);
        b.sample(&[m], &[3, 0], &[]);
        b.p.location.push(pb::Location {
            id: 9,
            address: 0x4010,
            ..Default::default()
        });
        b.sample(&[9, m], &[1, 1], &[]);
        let k = b.s("bytes");
        b.p.sample[0].label.push(pb::Label {
            key: k,
            num: 64,
            ..Default::default()
        });
        b.p.default_sample_type = b.s("alloc_space");
        let mut out = vec![b.bytes()];
        for kind in [
            crate::synth::SynthKind::Heap,
            crate::synth::SynthKind::Goroutine,
        ] {
            let p = crate::synth::generate(&crate::synth::SynthConfig {
                kind,
                seed: 3,
                samples: 12,
                functions: 9,
                max_depth: 5,
            });
            out.push(p.encode_to_vec());
        }
        out
    }

    /// The single-pass decoder and the message-based one agree: same profile, or the
    /// same kind of error (and the same message for reference errors).
    /// [`stream::open`] on `bytes` received `piece` bytes at a time, each prefix
    /// walked as it grows, and `ahead` more samples read ahead after each piece.
    fn walked_in_pieces(
        bytes: &[u8],
        piece: usize,
        ahead: usize,
    ) -> Result<stream::Decoder<'_>, DecodeError> {
        let mut walk = stream::Walk::default();
        let mut end = 0;
        while end < bytes.len() {
            end = (end + piece).min(bytes.len());
            walk.advance(&bytes[..end]);
            walk.read_samples_ahead(&bytes[..end], ahead);
        }
        walk.finish(bytes, &stream::InTurn)
    }

    /// Every sample a decoder hands out, as text, or the error of the walk.
    fn samples_of(
        d: &Result<stream::Decoder<'_>, DecodeError>,
        limits: DecodeLimits,
    ) -> Result<Vec<String>, DecodeError> {
        let d = d.as_ref().map_err(Clone::clone)?;
        let mut out = Vec::new();
        d.samples(limits, |s| {
            out.push(format!(
                "{} {:?} {:?} {:?} {:?}",
                s.index, s.values, s.locations, s.frames, s.labels
            ))
        })?;
        Ok(out)
    }

    #[test]
    fn a_walk_byte_by_byte_reads_what_a_walk_in_one_go_reads() {
        for base in corpus() {
            let want = stream::open(&base).map(stream::Decoder::into_tables);
            assert!(want.is_ok());
            let got = walked_in_pieces(&base, 1, 0).map(stream::Decoder::into_tables);
            assert_eq!(got, want);
            // Cut short, the walk reports what a walk of the short bytes in one go does.
            let short = &base[..base.len() - 3];
            let want = stream::open(short).map(|_| ());
            assert!(want.is_err());
            assert_eq!(walked_in_pieces(short, 1, 0).map(|_| ()), want);
        }
    }

    fn same_verdict(bytes: &[u8], limits: DecodeLimits) {
        // The tables come out the same, errors included, in whichever order they are read.
        let tables =
            |d: Result<stream::Decoder<'_>, DecodeError>| d.map(stream::Decoder::into_tables);
        let opened = stream::open(bytes);
        let want = samples_of(&opened, limits);
        let whole = tables(opened);
        assert_eq!(
            whole,
            tables(stream::open_with(bytes, &stream::Reversed)),
            "{bytes:02x?}"
        );
        // And when the top level is walked as the bytes arrive, about 40 pieces, with
        // samples read ahead or not: the samples come out the same too, or the same error.
        let piece = 1 + bytes.len() / 40;
        for ahead in [0, 1, usize::MAX] {
            let walked = walked_in_pieces(bytes, piece, ahead);
            assert_eq!(samples_of(&walked, limits), want, "{ahead}: {bytes:02x?}");
            assert_eq!(whole, tables(walked), "{bytes:02x?}");
        }
        let fast = decode_profile(bytes, limits);
        let reference = decode_profile_prost(bytes, limits);
        match (&fast, &reference) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{bytes:02x?}"),
            (Err(DecodeError::Protobuf(_)), Err(DecodeError::Protobuf(_))) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "{bytes:02x?}"),
            _ => panic!("fast {fast:?} vs reference {reference:?} on {bytes:02x?}"),
        }
    }

    #[test]
    fn single_pass_matches_message_decoder_on_mutated_input() {
        let mut rng = crate::synth::Rng::new(42);
        for base in corpus() {
            same_verdict(&base, DecodeLimits::default());
            for _ in 0..3000 {
                let mut m = base.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(m.len().max(1));
                    match rng.below(6) {
                        0 => m[at] ^= 1 << rng.below(8),
                        1 => m[at] = rng.next_u64() as u8,
                        2 => m.truncate(at),
                        3 => m.insert(at, rng.next_u64() as u8),
                        4 if at < m.len() => drop(m.remove(at)),
                        _ => {
                            let end = (at + rng.below(16)).min(m.len());
                            let chunk = m[at..end].to_vec();
                            let to = rng.below(m.len() + 1);
                            m.splice(to..to, chunk);
                        }
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                let max_frames = if rng.percent(20) {
                    rng.below(40) as u64
                } else {
                    1 << 20
                };
                same_verdict(&m, DecodeLimits { max_frames });
            }
        }
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    #[test]
    fn wire_edge_cases_match_message_decoder() {
        let base = corpus().remove(0);
        // Unknown top-level fields of every wire type, and groups nested around the
        // recursion limit.
        for depth in [1, 99, 100, 101, 102] {
            let mut m = base.clone();
            for _ in 0..depth {
                m.push((20 << 3) | 3);
            }
            for _ in 0..depth {
                m.push((20 << 3) | 4);
            }
            same_verdict(&m, DecodeLimits::default());
        }
        for tail in [
            &[(20 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8][..],
            &[(20 << 3) | 5, 1, 2, 3, 4],
            &[(20 << 3) | 5, 1, 2, 3],
            &[(20 << 3) | 4],
            &[(20 << 3) | 6, 0],
            &[(9 << 3) | 2, 0],
            &[(6 << 3), 0],
            &[(6 << 3) | 2, 1, 0xff],
            &[0, 0],
        ] {
            let mut m = base.clone();
            m.extend_from_slice(tail);
            same_verdict(&m, DecodeLimits::default());
        }
        // Ten-byte varints: a last byte of 1 is u64 range, 2 overflows.
        for last in [0u8, 1, 2, 0x7f] {
            let mut m = base.clone();
            m.push(9 << 3);
            m.extend_from_slice(&[0xff; 9]);
            m.push(last);
            same_verdict(&m, DecodeLimits::default());
        }
        // A sample with unpacked and packed location ids mixed, and values split.
        let mut s = Vec::new();
        s.push(1 << 3);
        varint(2, &mut s);
        s.push((1 << 3) | 2);
        s.push(1);
        varint(1, &mut s);
        s.push(2 << 3);
        varint(7, &mut s);
        s.push((2 << 3) | 2);
        s.push(1);
        varint(8, &mut s);
        let mut m = base.clone();
        m.push((2 << 3) | 2);
        varint(s.len() as u64, &mut m);
        m.extend_from_slice(&s);
        same_verdict(&m, DecodeLimits::default());
        let p = decode_profile(&m, DecodeLimits::default()).unwrap();
        let last = p.sample_count() - 1;
        assert_eq!(p.values(last), [7, 8]);
        assert_eq!(names(&p, last), ["main.main", "main.inner", "main.outer"]);
    }

    #[test]
    fn wire_error_wins_over_reference_error() {
        let mut b = Builder::new(&[("x", "count")]);
        let l = b.loc(&["f"]);
        b.sample(&[l + 5], &[1], &[]);
        let mut m = b.bytes();
        assert!(matches!(
            decode_profile(&m, DecodeLimits::default()),
            Err(DecodeError::Invalid(_))
        ));
        // A truncated field after the bad reference: prost never got to resolve it.
        m.extend_from_slice(&[(20 << 3) | 2, 5]);
        assert!(matches!(
            decode_profile(&m, DecodeLimits::default()),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
