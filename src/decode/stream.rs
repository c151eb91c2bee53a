//! A single pass over the pprof wire format, without building a message per field.
//!
//! [`open`] walks the top level of the `Profile` message once, keeping borrowed slices
//! of its repeated fields, then resolves the small tables (sample types, functions,
//! locations) the same way, with the same checks and messages, as the resolved
//! [`Profile`](super::Profile) always did. [`Decoder::samples`] then parses each sample
//! straight into caller-owned scratch buffers, so a caller can aggregate a profile of
//! any size without holding its samples in memory.
//!
//! A caller that receives the profile in pieces walks each as it comes ([`Walk`]),
//! reading the location table as it goes; [`Walk::finish_with`] can then add up the
//! samples while the function table is read, on the guess (checked after) that the
//! function ids are 1, 2, 3, ... as Go writes them: `inspect` does both.
//!
//! The reader accepts exactly the encodings the generated prost types accept (varints
//! of at most ten bytes, packed or unpacked repeated scalars, known fields with their
//! declared wire type only, groups in unknown fields nested at most as deep as prost's
//! recursion limit, UTF-8 strings), so the fast path and the message types agree on
//! what is a protobuf error. Where a payload is both malformed on the wire and
//! inconsistent in its references, the wire error wins, as it did when the whole
//! message was decoded before being resolved: see [`wire_error_first`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hashbrown::{HashTable, hash_table};

use super::DecodeError;
use super::profile::{DecodeLimits, ValueType};

/// prost's recursion budget at the top-level message; each nested message or group
/// spends one.
const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

fn wire(msg: &str, reason: &str) -> DecodeError {
    DecodeError::Protobuf(format!(
        "failed to decode Protobuf message: {msg}: {reason}"
    ))
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

fn u32_of(n: usize, what: &str) -> Result<u32, DecodeError> {
    u32::try_from(n).map_err(|_| invalid(format!("too many {what}")))
}

/// A cursor over one message's bytes. Errors carry the message name for context.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    msg: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], msg: &'static str) -> Self {
        Self { buf, pos: 0, msg }
    }

    #[inline]
    fn more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[cold]
    #[inline(never)]
    fn err(&self, reason: &str) -> DecodeError {
        wire(self.msg, reason)
    }

    #[cold]
    #[inline(never)]
    fn wire_type_err(&self, wire_type: u8, expected: u8) -> DecodeError {
        self.err(&format!(
            "invalid wire type: {wire_type} (expected {expected})"
        ))
    }

    /// A base-128 varint of at most ten bytes whose tenth byte is 0 or 1, as prost
    /// reads them (non-minimal encodings included).
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let buf = self.buf;
        let mut pos = self.pos;
        let Some(&first) = buf.get(pos) else {
            return Err(self.err("invalid varint"));
        };
        pos += 1;
        if first < 0x80 {
            self.pos = pos;
            return Ok(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7;
        loop {
            let Some(&byte) = buf.get(pos) else {
                return Err(self.err("invalid varint"));
            };
            pos += 1;
            if shift == 63 {
                if byte > 1 {
                    return Err(self.err("invalid varint"));
                }
                value |= u64::from(byte) << 63;
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        self.pos = pos;
        Ok(value)
    }

    /// A field key: (field number, wire type).
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        // Fields 1 to 15 have one-byte keys: every field of a profile but a few.
        if let Some(&byte) = self.buf.get(self.pos) {
            let (tag, wire_type) = (u32::from(byte >> 3), byte & 7);
            if byte < 0x80 && tag != 0 && wire_type <= FIXED32 {
                self.pos += 1;
                return Ok((tag, wire_type));
            }
        }
        self.long_key()
    }

    /// [`Reader::key`] for keys of more than one byte, and bad ones.
    #[inline(never)]
    fn long_key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(self.err(&format!("invalid key value: {key}")));
        }
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(self.err(&format!("invalid wire type value: {wire_type}")));
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return Err(self.err("invalid tag value: 0"));
        }
        Ok((tag, wire_type))
    }

    /// The payload of a length-delimited field.
    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(self.err("buffer underflow"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn advance(&mut self, n: u64) -> Result<(), DecodeError> {
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.err("buffer underflow"));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// Skips an unknown field; `budget` is the recursion budget left at this level.
    fn skip(&mut self, wire_type: u8, tag: u32, budget: u32) -> Result<(), DecodeError> {
        if budget == 0 {
            return Err(self.err("recursion limit reached"));
        }
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8),
            FIXED32 => self.advance(4),
            LEN => self.bytes().map(drop),
            START_GROUP => loop {
                let (inner_tag, inner_type) = self.key()?;
                if inner_type == END_GROUP {
                    if inner_tag != tag {
                        return Err(self.err("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(inner_type, inner_tag, budget - 1)?;
            },
            _ => Err(self.err("unexpected end group tag")),
        }
    }

    /// A singular scalar field (int64, uint64, bool): must be a varint.
    #[inline(always)]
    fn scalar(&mut self, wire_type: u8) -> Result<u64, DecodeError> {
        if wire_type != VARINT {
            return Err(self.wire_type_err(wire_type, VARINT));
        }
        self.varint()
    }

    /// An embedded message field: must be length-delimited.
    #[inline(always)]
    fn message(&mut self, wire_type: u8) -> Result<&'a [u8], DecodeError> {
        if wire_type != LEN {
            return Err(self.wire_type_err(wire_type, LEN));
        }
        self.bytes()
    }

    /// A repeated scalar field, packed or not: calls `push` per element.
    #[inline]
    fn repeated(&mut self, wire_type: u8, mut push: impl FnMut(u64)) -> Result<(), DecodeError> {
        if wire_type == LEN {
            let packed = self.bytes()?;
            let mut r = Reader::new(packed, self.msg);
            while r.more() {
                push(r.varint()?);
            }
            Ok(())
        } else {
            push(self.scalar(wire_type)?);
            Ok(())
        }
    }

    /// [`Reader::repeated`] appending to `out`, for the long packed fields of a
    /// sample: a varint that ends within the eight bytes where it starts is read
    /// from one word, without a branch per byte.
    #[inline]
    fn repeated_into(&mut self, wire_type: u8, out: &mut Vec<u64>) -> Result<(), DecodeError> {
        if wire_type != LEN {
            out.push(self.scalar(wire_type)?);
            return Ok(());
        }
        let packed = self.bytes()?;
        // Pushed to a local: a Vec behind a reference has its length stored and
        // loaded again on every push.
        let mut values = std::mem::take(out);
        let mut pos = 0;
        while let Some(word) = packed.get(pos..pos + 8) {
            let Some((v, len)) = varint_in_word(word) else {
                break;
            };
            values.push(v);
            pos += len;
        }
        // The last bytes, and any varint of nine or ten bytes, the usual way.
        let mut r = Reader::new(&packed[pos..], self.msg);
        let tail = (|| {
            while r.more() {
                values.push(r.varint()?);
            }
            Ok(())
        })();
        *out = values;
        tail
    }
}

/// The varint at the start of `word` (eight bytes) and its length, if it ends within
/// them. Every varint of at most eight bytes is valid, so there is nothing to check.
#[inline(always)]
fn varint_in_word(word: &[u8]) -> Option<(u64, usize)> {
    let mut eight = [0; 8];
    eight.copy_from_slice(word);
    let x = u64::from_le_bytes(eight);
    // The high bit of each byte that ends a varint; the lowest one ends this varint.
    let ends = !x & 0x8080_8080_8080_8080;
    if ends == 0 {
        return None;
    }
    // The bytes up to and including the last one; then the 7-bit groups closed up:
    // in pairs, then fours, then the two halves.
    let x = x & (ends ^ (ends - 1));
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
    Some((x, (ends.trailing_zeros() as usize + 1) / 8))
}

/// Checks a message whose fields are all singular varints (numbers 1..=`fields`) and
/// returns the last value of each of the first two.
fn varint_message(
    bytes: &[u8],
    msg: &'static str,
    fields: u32,
    budget: u32,
) -> Result<[u64; 2], DecodeError> {
    // Two variables rather than an array written by index, which compiles to stores
    // that the return value then reads back through memory, stalling.
    let (mut first, mut second) = (0, 0);
    let mut r = Reader::new(bytes, msg);
    while r.more() {
        let (tag, wt) = r.key()?;
        if (1..=fields).contains(&tag) {
            let v = r.scalar(wt)?;
            match tag {
                1 => first = v,
                2 => second = v,
                _ => {}
            }
        } else {
            r.skip(wt, tag, budget)?;
        }
    }
    Ok([first, second])
}

/// A `Location`: its id, its address, and the function ids of its lines in order.
fn location(bytes: &[u8], lines: &mut Vec<u64>) -> Result<(u64, u64), DecodeError> {
    lines.clear();
    let (mut id, mut address) = (0, 0);
    let mut r = Reader::new(bytes, "Location");
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => id = r.scalar(wt)?,
            3 => address = r.scalar(wt)?,
            2 | 5 => drop(r.scalar(wt)?),
            4 => {
                let line = r.message(wt)?;
                let [function_id, _] = varint_message(line, "Line", 3, RECURSION_LIMIT - 2)?;
                lines.push(function_id);
            }
            _ => r.skip(wt, tag, RECURSION_LIMIT - 1)?,
        }
    }
    Ok((id, address))
}

/// Scratch buffers for one sample, reused from sample to sample.
#[derive(Debug, Default)]
struct RawSample {
    location_ids: Vec<u64>,
    values: Vec<i64>,
    /// (key, str) string indices of labels; numeric labels are checked and dropped.
    labels: Vec<(i64, i64)>,
}

fn sample(bytes: &[u8], out: &mut RawSample) -> Result<(), DecodeError> {
    out.location_ids.clear();
    out.values.clear();
    out.labels.clear();
    let mut r = Reader::new(bytes, "Sample");
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => r.repeated_into(wt, &mut out.location_ids)?,
            2 => r.repeated(wt, |v| out.values.push(v as i64))?,
            3 => {
                let label = r.message(wt)?;
                let [key, s] = varint_message(label, "Label", 4, RECURSION_LIMIT - 2)?;
                out.labels.push((key as i64, s as i64));
            }
            _ => r.skip(wt, tag, RECURSION_LIMIT - 1)?,
        }
    }
    Ok(())
}

/// Most bytes [`SamplesAhead`] holds. The samples of the bench's 20,000-stack
/// goroutine profile take 1.3 MB.
const AHEAD_MAX_BYTES: usize = 2 << 20;

/// The first samples of a profile read ahead of the pass that adds them up
/// ([`Walk::read_samples_ahead`]), while the rest of the profile is still coming: their
/// values and location ids laid end to end, so that the pass has no varints left to
/// read for them. Only samples whose ids fit in 16 bits are read ahead (a goroutine
/// profile's stacks, as Go writes them, refer to far fewer locations); the first
/// sample that is not ends the reading, and the pass reads it and every later one from
/// the wire as usual.
#[derive(Debug, Default)]
struct SamplesAhead {
    /// How many samples, from the first, are read.
    count: usize,
    /// How many values each sample read has (all have the same number).
    n_values: usize,
    values: Vec<i64>,
    ids: Vec<u16>,
    /// Per sample read: where its ids end in `ids`.
    ends: Vec<u32>,
    /// String labels (key, str) as string indices; numeric ones, which the pass
    /// passes over, are left out.
    labels: Vec<(i64, i64)>,
    /// Per sample read: where its labels end in `labels`.
    label_ends: Vec<u32>,
    /// Where in the profile the last sample read ends (0 before the first).
    end: usize,
    /// Whether reading has ended: a sample did not parse, had an id of more
    /// than 16 bits, or a number of values unlike the first; or the next sample would
    /// take the whole past [`AHEAD_MAX_BYTES`].
    stopped: bool,
    /// Scratch for one sample.
    raw: RawSample,
}

impl SamplesAhead {
    /// Reads at most `max` of the samples in `runs` (all walked, in `bytes`) after the
    /// last one read. Returns how many it read.
    fn read(&mut self, bytes: &[u8], runs: &Runs, max: usize) -> usize {
        if self.stopped || self.count >= runs.count {
            return 0;
        }
        let mut read = 0;
        for (m, end) in runs.messages_from(bytes, self.end).take(max) {
            if !self.push(m) {
                self.stopped = true;
                break;
            }
            self.end = end;
            read += 1;
        }
        read
    }

    /// Parses one sample and keeps it, if it is one that may be read ahead.
    fn push(&mut self, m: &[u8]) -> bool {
        let held = self.held();
        let raw = &mut self.raw;
        if sample(m, raw).is_err() {
            return false;
        }
        if self.count == 0 {
            self.n_values = raw.values.len();
        }
        let fits = raw.location_ids.iter().all(|&id| id <= u64::from(u16::MAX));
        let strings = || raw.labels.iter().filter(|&&(_, s)| s != 0);
        let more = Self::size(
            raw.location_ids.len(),
            raw.values.len(),
            strings().count(),
            1,
        );
        if raw.values.len() != self.n_values || !fits || held + more > AHEAD_MAX_BYTES {
            return false;
        }
        self.values.extend_from_slice(&raw.values);
        self.ids
            .extend(raw.location_ids.iter().map(|&id| id as u16));
        self.ends.push(self.ids.len() as u32);
        self.labels.extend(strings());
        self.label_ends.push(self.labels.len() as u32);
        self.count += 1;
        true
    }

    /// Bytes that `ids` location ids, `values` values, `labels` labels and the ends of
    /// `samples` samples take here.
    fn size(ids: usize, values: usize, labels: usize, samples: usize) -> usize {
        ids * 2 + values * 8 + labels * 16 + samples * 8
    }

    /// Bytes the samples read so far take, counted as [`AHEAD_MAX_BYTES`] counts them.
    fn held(&self) -> usize {
        Self::size(
            self.ids.len(),
            self.values.len(),
            self.labels.len(),
            self.count,
        )
    }

    /// The values, location ids and string labels of sample `i`, which must be below
    /// `count`.
    #[inline]
    fn get(&self, i: usize) -> (&[i64], &[u16], &[(i64, i64)]) {
        let (ids, labels) = if i == 0 {
            (0, 0)
        } else {
            (self.ends[i - 1], self.label_ends[i - 1])
        };
        let values = &self.values[i * self.n_values..(i + 1) * self.n_values];
        let ids = &self.ids[ids as usize..self.ends[i] as usize];
        (
            values,
            ids,
            &self.labels[labels as usize..self.label_ends[i] as usize],
        )
    }
}

/// Maps wire ids (u64) to dense indices: a table for small ids, as Go writes them
/// (1..=n), and a hash map for the rest, so that a hostile id cannot size the table.
/// While ids 1, 2, 3, ... have arrived in order with indices 0, 1, 2, ..., the id
/// gives the index: an insert writes no table and a lookup reads none. The first id
/// out of that order fills the table with the ones before it.
#[derive(Debug)]
struct IdMap {
    dense: Vec<u32>,
    /// Ids below this go in `dense`, which grows up to it as ids arrive.
    dense_limit: u64,
    sparse: HashMap<u64, u32>,
    /// Ids inserted so far.
    len: u64,
    /// Whether the `k`-th insert (from 0) was id `k + 1` with index `k`, for every one.
    in_order: bool,
}

impl IdMap {
    /// A map for about `count` ids.
    fn new(count: usize) -> Self {
        Self {
            dense: Vec::with_capacity(count.saturating_add(1)),
            dense_limit: (count as u64).saturating_mul(2).saturating_add(1025),
            sparse: HashMap::new(),
            len: 0,
            in_order: true,
        }
    }

    /// Inserts; false if the id was already present.
    #[inline]
    fn insert(&mut self, id: u64, idx: u32) -> bool {
        if self.in_order {
            if id == self.len + 1 && u64::from(idx) == self.len {
                // The id gives the index: nothing to store until the order breaks.
                self.len += 1;
                return true;
            }
            self.fill_in_order();
        }
        self.len += 1;
        if id >= self.dense_limit {
            return self.sparse.insert(id, idx).is_none();
        }
        let i = id as usize;
        if i >= self.dense.len() {
            self.dense.resize(i + 1, u32::MAX);
        }
        let fresh = self.dense[i] == u32::MAX;
        self.dense[i] = idx;
        fresh
    }

    /// Leaves the in-order state: the ids so far go in the tables they skipped.
    #[cold]
    fn fill_in_order(&mut self) {
        self.in_order = false;
        for i in 0..self.len {
            let (id, idx) = (i + 1, i as u32);
            if id < self.dense_limit {
                if id as usize >= self.dense.len() {
                    self.dense.resize(id as usize + 1, u32::MAX);
                }
                self.dense[id as usize] = idx;
            } else {
                self.sparse.insert(id, idx);
            }
        }
    }

    /// The index of `id`. Inlined where it is called for every frame: the ids of a
    /// profile Go wrote are in order, and the lookup is then a subtraction.
    #[inline(always)]
    fn get(&self, id: u64) -> Option<u32> {
        if self.in_order {
            return id
                .checked_sub(1)
                .filter(|&i| i < self.len)
                .map(|i| i as u32);
        }
        self.get_in_tables(id)
    }

    /// [`IdMap::get`] once the ids have left their order.
    fn get_in_tables(&self, id: u64) -> Option<u32> {
        if id < self.dense_limit {
            self.dense
                .get(id as usize)
                .copied()
                .filter(|&i| i != u32::MAX)
        } else {
            self.sparse.get(&id).copied()
        }
    }
}

/// Every this many fields, [`Runs`] notes where one starts, so that a table can be cut
/// into parts of about equal count without walking it.
const MARK_EVERY: usize = 1024;

/// Top-level fields of one kind, kept as byte ranges of the profile that each hold a
/// run of consecutive such fields. Go writes every table in one run, so this is a few
/// words where a slice per message would cost 16 bytes each (3 MB for a profile of
/// 200,000 samples, 1.7 MB for 110,000 locations).
#[derive(Debug, Default, Clone)]
struct Runs {
    spans: Vec<(usize, usize)>,
    count: usize,
    /// `marks[m]`: where field number `(m + 1) * MARK_EVERY` starts.
    marks: Vec<usize>,
}

impl Runs {
    /// Records the field at `start..end` of the top level.
    fn push(&mut self, start: usize, end: usize) {
        match self.spans.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.spans.push((start, end)),
        }
        if self.count > 0 && self.count % MARK_EVERY == 0 {
            self.marks.push(start);
        }
        self.count += 1;
    }

    /// Cuts off the fields from `mark` on and returns them (without marks) with the
    /// number of their first field, `(mark + 1) * MARK_EVERY`; `self` keeps those before
    /// it, with their marks.
    fn split_off(&mut self, mark: usize) -> (usize, Runs) {
        let at = self.marks[mark];
        let first = (mark + 1) * MARK_EVERY;
        // The span holding `at`: fields are contiguous within a span, so `at` is a
        // field boundary and splitting the span there leaves two whole runs.
        let i = self.spans.partition_point(|&(_, end)| end <= at);
        let mut tail = self.spans.split_off(i);
        if let Some(head) = tail.first_mut() {
            if head.0 < at {
                self.spans.push((head.0, at));
                head.0 = at;
            }
        }
        let rest = Runs {
            spans: tail,
            count: self.count - first,
            marks: Vec::new(),
        };
        self.count = first;
        self.marks.truncate(mark);
        (first, rest)
    }

    /// The fields cut into at most `n` runs of consecutive fields of about equal
    /// count, in order: [`Decoder::sample_parts`].
    fn parts(&self, n: usize) -> Vec<SampleRange> {
        let mut whole = self.clone();
        let marks = whole.marks.len();
        let n = n.clamp(1, marks + 1);
        // Cut points as marks, last first, so each cut splits what is left of the front.
        let cuts: Vec<usize> = (1..n).rev().map(|j| j * (marks + 1) / n - 1).collect();
        let mut parts = Vec::with_capacity(n);
        for mark in cuts {
            let (first, runs) = whole.split_off(mark);
            parts.push(SampleRange { first, runs });
        }
        whole.marks = Vec::new();
        parts.push(SampleRange {
            first: 0,
            runs: whole,
        });
        parts.reverse();
        parts
    }

    /// The payload of every recorded field that ends after byte `from` (the end of
    /// one, or 0), in order, with where the field ends.
    fn messages_from<'a>(
        &'a self,
        bytes: &'a [u8],
        from: usize,
    ) -> impl Iterator<Item = (&'a [u8], usize)> + 'a {
        let first = self.spans.partition_point(|&(_, end)| end <= from);
        self.spans[first..].iter().flat_map(move |&(start, end)| {
            let start = start.max(from);
            let mut r = Reader::new(&bytes[..end], "Profile");
            r.pos = start;
            std::iter::from_fn(move || {
                if !r.more() {
                    return None;
                }
                let (_, wire_type) = r.key().ok()?;
                let m = r.message(wire_type).ok()?;
                Some((m, r.pos))
            })
        })
    }

    /// The payload of every recorded field, in order. The fields were read once
    /// already, so reading them again cannot fail; if it did, the walk would stop.
    fn messages<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.messages_from(bytes, 0).map(|(m, _)| m)
    }
}

/// A run of consecutive samples of a [`Decoder`], from [`Decoder::sample_parts`].
#[derive(Debug)]
pub struct SampleRange {
    /// Position in the profile of the first sample.
    first: usize,
    runs: Runs,
}

impl SampleRange {
    /// Number of samples in the range.
    pub fn len(&self) -> usize {
        self.runs.count
    }

    /// Whether the range holds no sample.
    pub fn is_empty(&self) -> bool {
        self.runs.count == 0
    }
}

/// A profile whose tables are resolved and whose samples are still on the wire.
pub struct Decoder<'a> {
    /// The sample types, in value order.
    pub sample_types: Vec<ValueType>,
    /// Index into `sample_types` of the declared default, if it names one.
    pub default_sample_type: Option<usize>,
    /// Distinct function names, borrowed from the profile but for those made up for
    /// unsymbolised locations; frames refer to them by index.
    pub functions: Vec<Cow<'a, str>>,
    /// When the profile was taken, in nanoseconds since the Unix epoch (0 if unset).
    pub time_nanos: i64,
    /// Per location, and one past the last: where its expanded frames start in
    /// `loc_frames` (location `i` holds `loc_starts[i]..loc_starts[i + 1]`).
    pub loc_starts: Vec<u32>,
    /// Function indices of every location's lines, innermost first.
    pub loc_frames: Vec<u32>,
    bytes: &'a [u8],
    strings: Vec<&'a str>,
    samples: Runs,
    loc_ids: IdMap,
    /// Per location: its one frame's function index, or [`MANY`].
    loc_one: Vec<u32>,
    ahead: SamplesAhead,
}

/// One sample as [`Decoder::samples`] hands it out: valid only during the callback.
pub struct SampleRef<'s> {
    /// The sample's position in the profile.
    pub index: usize,
    /// One value per sample type.
    pub values: &'s [i64],
    /// Location indices (see [`Decoder::loc_span`]), leaf first.
    pub locations: &'s [u32],
    /// The stack as function indices, leaf first, inlined calls expanded innermost
    /// first (the locations' frames laid end to end).
    pub frames: &'s [u32],
    /// String labels (key, value); numeric labels are not included.
    pub labels: &'s [(&'s str, &'s str)],
}

#[cfg(test)]
impl Decoder<'_> {
    /// Function names, location starts and frames: what the tables resolved to, for
    /// tests that compare two ways of reading a profile.
    pub(crate) fn into_tables(self) -> (Vec<String>, Vec<u32>, Vec<u32>) {
        let names = self.functions.into_iter().map(Cow::into_owned).collect();
        (names, self.loc_starts, self.loc_frames)
    }
}

impl Decoder<'_> {
    /// The sample type `go tool pprof` shows when none is asked for.
    pub fn default_index(&self) -> Option<usize> {
        self.default_sample_type
            .or_else(|| self.sample_types.len().checked_sub(1))
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

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.samples.count
    }

    /// The range of `loc_frames` holding location `idx`'s frames.
    #[inline]
    pub fn loc_span(&self, idx: u32) -> (u32, u32) {
        loc_span(&self.loc_starts, idx)
    }

    /// The function indices of a stack given as location indices, leaf first, inlined
    /// calls expanded innermost first.
    pub fn frames<'s>(&'s self, locations: &'s [u32]) -> impl Iterator<Item = u32> + 's {
        locations.iter().flat_map(move |&loc| {
            let (s, e) = self.loc_span(loc);
            self.loc_frames[s as usize..e as usize].iter().copied()
        })
    }

    /// Parses and checks every sample in order, handing each to `visit`. Stops at the
    /// first bad sample. `limits.max_frames` bounds the expanded frames of all samples.
    pub fn samples(
        &self,
        limits: DecodeLimits,
        visit: impl FnMut(&SampleRef<'_>),
    ) -> Result<(), DecodeError> {
        self.walk(0, &self.samples, limits, visit)
    }

    /// The samples cut into at most `n` runs of consecutive samples of about equal
    /// count, in order, for [`Decoder::samples_in`] to walk on as many threads. A
    /// profile of fewer than a couple of thousand samples stays in one part.
    pub fn sample_parts(&self, n: usize) -> Vec<SampleRange> {
        self.samples.parts(n)
    }

    /// [`Decoder::samples`] for the samples of one part from [`Decoder::sample_parts`]:
    /// `SampleRef::index` and error messages count from the start of the profile, and
    /// `limits.max_frames` bounds the frames of this part alone.
    pub fn samples_in(
        &self,
        part: &SampleRange,
        limits: DecodeLimits,
        visit: impl FnMut(&SampleRef<'_>),
    ) -> Result<(), DecodeError> {
        self.walk(part.first, &part.runs, limits, visit)
    }

    fn walk(
        &self,
        first: usize,
        runs: &Runs,
        limits: DecodeLimits,
        visit: impl FnMut(&SampleRef<'_>),
    ) -> Result<(), DecodeError> {
        self.stacks().walk(first, runs, limits, visit)
    }

    fn stacks(&self) -> Stacks<'_, '_> {
        Stacks {
            bytes: self.bytes,
            n_types: self.sample_types.len(),
            strings: Ok(&self.strings),
            loc_ids: &self.loc_ids,
            loc_starts: &self.loc_starts,
            loc_frames: &self.loc_frames,
            loc_one: &self.loc_one,
            ahead: &self.ahead,
        }
    }
}

/// What a walk over the samples reads besides them: a [`Decoder`]'s tables, or those
/// of an [`EarlyStacks`], resolved before the function names.
struct Stacks<'t, 'a> {
    bytes: &'a [u8],
    n_types: usize,
    /// The string table, or only its length: then labels are checked against it but
    /// not handed out.
    strings: Result<&'t [&'a str], usize>,
    loc_ids: &'t IdMap,
    loc_starts: &'t [u32],
    loc_frames: &'t [u32],
    loc_one: &'t [u32],
    /// Samples read ahead, which the walk takes instead of reading them again.
    ahead: &'t SamplesAhead,
}

impl<'a> Stacks<'_, 'a> {
    fn walk(
        &self,
        first: usize,
        runs: &Runs,
        limits: DecodeLimits,
        mut visit: impl FnMut(&SampleRef<'_>),
    ) -> Result<(), DecodeError> {
        let mut out = Expanded::default();
        // The samples of this part read ahead, then the rest from the wire.
        let ahead = self.ahead;
        let read = if ahead.n_values == self.n_types {
            ahead.count
        } else {
            0
        };
        let last = first + runs.count;
        let wire_from = read.clamp(first, last);
        for i in first..wire_from {
            let (values, ids, labels) = ahead.get(i);
            let ids = ids.iter().map(|&id| u64::from(id));
            self.expand(i, values, ids, labels, limits, &mut out, &mut visit)?;
        }
        if wire_from == last {
            return Ok(());
        }
        let from = if wire_from > first { ahead.end } else { 0 };
        let mut raw = RawSample::default();
        for (k, (bytes, _)) in runs.messages_from(self.bytes, from).enumerate() {
            let i = wire_from + k;
            sample(bytes, &mut raw)?;
            if raw.values.len() != self.n_types {
                return Err(invalid(format!(
                    "sample {i} has {} values for {} sample types",
                    raw.values.len(),
                    self.n_types
                )));
            }
            let ids = raw.location_ids.iter().copied();
            self.expand(
                i,
                &raw.values,
                ids,
                &raw.labels,
                limits,
                &mut out,
                &mut visit,
            )?;
        }
        Ok(())
    }

    /// Resolves sample `i`'s location ids and labels and hands the sample to `visit`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn expand(
        &self,
        i: usize,
        values: &[i64],
        ids: impl Iterator<Item = u64>,
        raw_labels: &[(i64, i64)],
        limits: DecodeLimits,
        out: &mut Expanded<'a>,
        visit: &mut impl FnMut(&SampleRef<'_>),
    ) -> Result<(), DecodeError> {
        out.locations.clear();
        out.frames.clear();
        for id in ids {
            let idx = self
                .loc_ids
                .get(id)
                .ok_or_else(|| invalid(format!("sample {i} refers to unknown location {id}")))?;
            out.locations.push(idx);
            // Most locations hold one frame: one lookup instead of three.
            let one = self.loc_one[idx as usize];
            if one != MANY {
                out.total_frames += 1;
                out.frames.push(one);
            } else {
                let (a, b) = loc_span(self.loc_starts, idx);
                out.total_frames += u64::from(b - a);
                // A handful of frames: a loop beats a call to memcpy.
                for &f in &self.loc_frames[a as usize..b as usize] {
                    out.frames.push(f);
                }
            }
        }
        if out.total_frames > limits.max_frames {
            return Err(DecodeError::TooLarge {
                limit: limits.max_frames,
            });
        }
        out.labels.clear();
        for &(key, s) in raw_labels {
            if s == 0 {
                continue;
            }
            match self.strings {
                Ok(strings) => out.labels.push((
                    string_at(strings, key, "label key")?,
                    string_at(strings, s, "label value")?,
                )),
                Err(n) => {
                    string_index(n, key, "label key")?;
                    string_index(n, s, "label value")?;
                }
            }
        }
        visit(&SampleRef {
            index: i,
            values,
            locations: &out.locations,
            frames: &out.frames,
            labels: &out.labels,
        });
        Ok(())
    }
}

/// What [`Stacks::expand`] makes of one sample, reused from sample to sample, and the
/// frames of the samples so far.
#[derive(Default)]
struct Expanded<'a> {
    locations: Vec<u32>,
    frames: Vec<u32>,
    labels: Vec<(&'a str, &'a str)>,
    total_frames: u64,
}

/// In [`Decoder::loc_one`]: the location has no frame or more than one.
const MANY: u32 = u32::MAX;

/// The range of the frames table holding location `idx`'s frames, by the table's
/// `starts` (see [`Decoder::loc_starts`]).
#[inline]
fn loc_span(starts: &[u32], idx: u32) -> (u32, u32) {
    let i = idx as usize;
    (starts[i], starts[i + 1])
}

fn string_at<'s>(strings: &[&'s str], idx: i64, what: &str) -> Result<&'s str, DecodeError> {
    Ok(strings[string_index(strings.len(), idx, what)?])
}

/// `idx` as an index into a string table of `len` strings, if it is one.
fn string_index(len: usize, idx: i64, what: &str) -> Result<usize, DecodeError> {
    usize::try_from(idx)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| invalid(format!("{what} refers to string {idx}, outside the table")))
}

/// The strings at `ranges` of `bytes`, checked to be UTF-8.
///
/// Strings that follow one another with only ASCII between them are checked in one
/// call: a string table as Go writes it, up to the next string of 128 bytes or more,
/// whose length takes a byte past ASCII. An ASCII byte is a character of its own, so
/// such a stretch is UTF-8 exactly when each of its strings is, and each string is a
/// slice of it that starts and ends on a character. One call per string cost about
/// 20 ns each, 0.4 ms for the 21,000 strings of the bench's goroutine profile.
fn utf8_strings<'a>(
    bytes: &'a [u8],
    ranges: &[(usize, usize)],
) -> Result<Vec<&'a str>, DecodeError> {
    let mut strings = Vec::with_capacity(ranges.len());
    let mut rest = ranges;
    while let Some(&(start, mut end)) = rest.first() {
        let mut n = 1;
        for &(a, b) in &rest[1..] {
            if a < end || !bytes[end..a].is_ascii() {
                break;
            }
            end = b;
            n += 1;
        }
        let stretch = std::str::from_utf8(&bytes[start..end]).map_err(|_| not_utf8())?;
        for &(a, b) in &rest[..n] {
            strings.push(stretch.get(a - start..b - start).ok_or_else(not_utf8)?);
        }
        rest = &rest[n..];
    }
    Ok(strings)
}

/// A string table entry that is not UTF-8, as prost words it.
#[cold]
fn not_utf8() -> DecodeError {
    wire(
        "Profile.string_table",
        "invalid string value: data is not UTF-8 encoded",
    )
}

/// Runs two independent passes of [`open_with`] and returns both results: one after the
/// other ([`InTurn`]), or at the same time on two threads.
pub trait Pair {
    /// Runs `first` and `second`, in any order or at once.
    fn both<A: Send, B: Send>(
        &self,
        first: impl FnOnce() -> A + Send,
        second: impl FnOnce() -> B + Send,
    ) -> (A, B);
}

/// A [`Pair`] that runs the first pass, then the second, on the calling thread.
pub struct InTurn;

impl Pair for InTurn {
    fn both<A: Send, B: Send>(
        &self,
        first: impl FnOnce() -> A + Send,
        second: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        let a = first();
        (a, second())
    }
}

/// A [`Pair`] that runs the second pass first, as a helper thread that finishes
/// first would.
#[cfg(test)]
pub(crate) struct Reversed;

#[cfg(test)]
impl Pair for Reversed {
    fn both<A: Send, B: Send>(
        &self,
        first: impl FnOnce() -> A + Send,
        second: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        let b = second();
        (first(), b)
    }
}

/// Walks the top level of an uncompressed profile and resolves its tables. Samples
/// are only located here; [`Decoder::samples`] parses them.
pub fn open(bytes: &[u8]) -> Result<Decoder<'_>, DecodeError> {
    open_with(bytes, &InTurn)
}

/// [`open`], with the function and location tables read by `pair`, so a caller with a
/// spare core can read them at the same time. The result, errors included, is the
/// same whichever `pair` runs them.
pub fn open_with<'a>(bytes: &'a [u8], pair: &impl Pair) -> Result<Decoder<'a>, DecodeError> {
    Walk::default().finish(bytes, pair)
}

/// Where the parts of a profile lie, as far as its top level has been walked: a
/// caller that receives a profile piece by piece (from an inflater, say) can walk
/// each piece as it comes, and [`Walk::finish`] what it walked once it has them all.
/// Only byte offsets are kept, so the buffer may grow, and move, between pieces.
#[derive(Debug, Default)]
pub struct Walk {
    /// Where the first field not yet walked starts.
    pos: usize,
    sample_type_fields: Vec<(usize, usize)>,
    samples: Runs,
    locations: Runs,
    function_runs: Runs,
    /// Byte ranges of the string table's entries.
    strings: Vec<(usize, usize)>,
    default_sample_type: i64,
    time_nanos: i64,
    /// The location table as far as [`Walk::read_locations`] read it.
    early_locations: Option<RawLocations>,
    ahead: SamplesAhead,
}

impl Walk {
    /// Reads the locations walked so far in `bytes` (as at the last
    /// [`Walk::advance`]) that are not read yet, so that [`Walk::finish`] has less of
    /// the table left to read.
    pub fn read_locations(&mut self, bytes: &[u8]) {
        if self.locations.count > 0 {
            let t = self
                .early_locations
                .get_or_insert_with(|| RawLocations::new(0));
            t.read_more(bytes, &self.locations);
        }
    }

    /// Reads at most `max` more of the samples walked so far in `bytes` (as at the last
    /// [`Walk::advance`]), for the pass over the samples to take instead of reading them
    /// from the wire: something to do while the rest of the profile is on its way.
    /// Returns how many it read: 0 once every sample walked is read, or once reading
    /// ahead has stopped: its byte budget is spent, or a sample is not one that can be
    /// read ahead.
    pub fn read_samples_ahead(&mut self, bytes: &[u8], max: usize) -> usize {
        self.ahead.read(bytes, &self.samples, max)
    }

    /// Walks the top-level fields of `bytes`, the profile received so far (the same
    /// bytes as at the last call, with more after them), from where the last call
    /// stopped. It stops before a field it cannot read, which may only lack the bytes
    /// still to come: [`Walk::finish`] reads it again, and reports it if it is broken.
    pub fn advance(&mut self, bytes: &[u8]) {
        // An error here is no error yet: the field may be cut by the end of `bytes`.
        let _ = self.walk(bytes);
    }

    /// Walks from where the last walk stopped to the end of `bytes`, or up to the
    /// first field it cannot read, whose error it returns.
    fn walk(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(bytes, "Profile");
        r.pos = self.pos;
        while r.more() {
            self.field(&mut r)?;
            self.pos = r.pos;
        }
        Ok(())
    }

    /// The strings walked so far, checked to be UTF-8.
    fn utf8<'a>(&self, bytes: &'a [u8]) -> Result<Vec<&'a str>, DecodeError> {
        utf8_strings(bytes, &self.strings)
    }

    /// Reads the field where `r` stands.
    #[inline]
    fn field(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let field = r.pos;
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let m = r.message(wt)?;
                self.sample_type_fields.push((r.pos - m.len(), r.pos));
            }
            2 => {
                r.message(wt)?;
                self.samples.push(field, r.pos);
            }
            3 => {
                let m = r.message(wt)?;
                varint_message(m, "Mapping", 10, RECURSION_LIMIT - 1)?;
            }
            4 => {
                r.message(wt)?;
                self.locations.push(field, r.pos);
            }
            5 => {
                r.message(wt)?;
                self.function_runs.push(field, r.pos);
            }
            6 => {
                // Checked to be UTF-8 once, by `finish`.
                let b = r.message(wt)?;
                self.strings.push((r.pos - b.len(), r.pos));
            }
            9 => self.time_nanos = r.scalar(wt)? as i64,
            14 => self.default_sample_type = r.scalar(wt)? as i64,
            7 | 8 | 10 | 12 | 15 => drop(r.scalar(wt)?),
            11 => {
                let m = r.message(wt)?;
                varint_message(m, "ValueType", 2, RECURSION_LIMIT - 1)?;
            }
            13 => r.repeated(wt, drop)?,
            _ => r.skip(wt, tag, RECURSION_LIMIT)?,
        }
        Ok(())
    }

    /// Walks the rest of `bytes`, the whole profile, and resolves it into a decoder,
    /// with the function and location tables read by `pair` (see [`open_with`]).
    pub fn finish<'a>(self, bytes: &'a [u8], pair: &impl Pair) -> Result<Decoder<'a>, DecodeError> {
        let none = None::<&fn(&EarlyStacks<'_, 'a>)>;
        self.finish_with(bytes, pair, none).map(|(d, _)| d)
    }

    /// [`Walk::finish`], which also has `early` read the samples while the function
    /// table is read: on the side that reads the location table once it is read, and
    /// on the other once the function table is, each taking parts of the samples that
    /// are left (see [`EarlyStacks::take`]). The frames it hands out take function id
    /// `k` as index `k - 1`, as the decoder resolves them for every
    /// profile Go writes. The results of `early`, one per side that ran it, come back
    /// only if the function table bears that out, and no sample failed; otherwise
    /// (or when the tables do not allow it) the decoder is the one [`Walk::finish`]
    /// gives, and the caller reads the samples from it.
    pub fn finish_with<'a, R: Send>(
        mut self,
        bytes: &'a [u8],
        pair: &impl Pair,
        early: Option<&(impl Fn(&EarlyStacks<'_, 'a>) -> R + Sync)>,
    ) -> Result<(Decoder<'a>, Option<Vec<R>>), DecodeError> {
        // A string before a broken field that is not UTF-8 is the first error.
        self.walk(bytes).or_else(|e| self.utf8(bytes).and(Err(e)))?;
        // The location table refers to no string and no function on the wire, so `pair`
        // may read it while the strings are checked and the function table is read.
        // Locations are resolved against the functions after both.
        // The string ranges are freed once the strings are made of them, before the
        // function table fills its map.
        let ranges = std::mem::take(&mut self.strings);
        let n_strings = ranges.len();
        // Locations read early are kept while their ids come in order: the map for
        // ids out of order was sized without knowing the table's length.
        let read_early = self.early_locations.take().filter(|t| t.ids.in_order);
        let ahead = std::mem::take(&mut self.ahead);
        // Set once by the location side, which the other side waits for only if that
        // side has started: run in turn, in either order, neither waits for nothing.
        let shared: OnceLock<Option<EarlyStacks<'_, 'a>>> = OnceLock::new();
        let started = AtomicBool::new(false);
        let this = &self;
        let (names_side, locations_side) = pair.both(
            || {
                let strings = utf8_strings(bytes, &ranges);
                drop(ranges);
                let tables = strings.map(|strings| {
                    let mut functions = function_table(bytes, &this.function_runs, &strings);
                    if early.is_some() {
                        if let Ok(f) = &mut functions {
                            f.let_go_of_names();
                        }
                    }
                    (strings, functions)
                });
                let mine = match early {
                    Some(early) if started.load(Ordering::Acquire) => {
                        shared.wait().as_ref().map(early)
                    }
                    _ => None,
                };
                (tables, mine)
            },
            || {
                if early.is_some() {
                    started.store(true, Ordering::Release);
                }
                let _unblock = SetOnDrop(&shared);
                let mut raw = match read_early {
                    Some(mut t) => {
                        t.read_more(bytes, &this.locations);
                        t
                    }
                    None => raw_location_table(bytes, &this.locations),
                };
                let Some(early) = early else {
                    return (Some(raw), None);
                };
                // Ids in order end at the number of functions: frames past it could
                // not be counted.
                let Some(largest) = raw.frames_in_order(this.function_runs.count as u64) else {
                    let _ = shared.set(None);
                    return (Some(raw), None);
                };
                let one = one_frame_each(&raw.starts, &raw.frames);
                let stacks = EarlyStacks {
                    bytes,
                    ahead: &ahead,
                    n_types: this.sample_type_fields.len(),
                    declares_default: this.default_sample_type != 0,
                    n_strings,
                    n_functions: this.function_runs.count,
                    largest,
                    locations: raw,
                    one,
                    parts: this.samples.parts(usize::MAX),
                    next: AtomicUsize::new(0),
                    failed: AtomicBool::new(false),
                };
                let _ = shared.set(Some(stacks));
                (None, shared.get().and_then(Option::as_ref).map(early))
            },
        );
        let (raw_locations, first) = locations_side;
        let (tables, second) = names_side;
        let (mut raw_locations, early_read) = match (raw_locations, shared.into_inner().flatten()) {
            (Some(raw), _) => (raw, None),
            (None, Some(e)) => {
                let failed = e.failed.into_inner();
                let read = (e.largest, e.one, failed, first.into_iter().chain(second));
                (e.locations, Some(read))
            }
            (None, None) => return Err(invalid("location table lost")),
        };
        // The errors come in the order of reading one table after the other: strings,
        // sample types, functions, locations.
        let (strings, functions) = tables?;
        let Walk {
            sample_type_fields,
            samples,
            locations,
            default_sample_type,
            time_nanos,
            ..
        } = self;
        // Sample types are tiny; parse them all before any check, like the rest of the
        // wire structure.
        let mut raw_types = Vec::with_capacity(sample_type_fields.len());
        for &(a, b) in &sample_type_fields {
            raw_types.push(varint_message(
                &bytes[a..b],
                "ValueType",
                2,
                RECURSION_LIMIT - 1,
            )?);
        }
        let sample_types = raw_types
            .iter()
            .map(|&[t, u]| {
                Ok(ValueType {
                    kind: string_at(&strings, t as i64, "sample type")?.to_owned(),
                    unit: string_at(&strings, u as i64, "sample unit")?.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        if sample_types.is_empty() && samples.count > 0 {
            return Err(invalid("samples present but no sample types"));
        }
        let default_sample_type = if default_sample_type == 0 {
            None
        } else {
            let name = string_at(&strings, default_sample_type, "default sample type")?;
            sample_types.iter().position(|t| t.kind == name)
        };
        let mut functions = functions?;
        let (loc_frames, loc_one, results) = match early_read {
            Some((largest, one, false, results))
                if functions.ids.in_order && largest <= functions.ids.len =>
            {
                let frames = std::mem::take(&mut raw_locations.frames);
                (frames, one, Some(results.collect()))
            }
            read => {
                if read.is_some() {
                    raw_locations.undo_in_order();
                }
                let (frames, one) = raw_locations.resolve(bytes, &locations, &mut functions)?;
                (frames, one, None)
            }
        };
        let RawLocations {
            starts: loc_starts,
            ids: loc_ids,
            ..
        } = raw_locations;
        let d = Decoder {
            sample_types,
            default_sample_type,
            functions: functions.names,
            time_nanos,
            loc_starts,
            loc_frames,
            bytes,
            strings,
            samples,
            loc_ids,
            loc_one,
            ahead,
        };
        Ok((d, results))
    }
}

/// The samples of a profile as [`Walk::finish_with`] hands them to its `early`
/// reader, before the function names are known: location tables resolved on the
/// guess that function `k` has id `k`, and the samples cut into parts for the two
/// sides to take in turn.
pub struct EarlyStacks<'t, 'a> {
    bytes: &'a [u8],
    ahead: &'t SamplesAhead,
    n_types: usize,
    declares_default: bool,
    n_strings: usize,
    n_functions: usize,
    /// The largest function id of a line.
    largest: u64,
    locations: RawLocations,
    one: Vec<u32>,
    parts: Vec<SampleRange>,
    /// The first part no side has taken yet.
    next: AtomicUsize,
    failed: AtomicBool,
}

impl EarlyStacks<'_, '_> {
    /// How many sample types the profile declares.
    pub fn sample_type_count(&self) -> usize {
        self.n_types
    }

    /// Whether the profile names a default sample type (which only the string table
    /// can tell).
    pub fn declares_default(&self) -> bool {
        self.declares_default
    }

    /// How many functions the frames may refer to: indices are below this.
    pub fn function_count(&self) -> usize {
        self.n_functions
    }

    /// Walks the parts no side has taken yet, one at a time, handing each sample to
    /// `visit` as [`Decoder::samples_in`] would, but without its labels (which are
    /// checked all the same). False if a sample failed here or on the other side: the
    /// results of both are then thrown away, and the decoder's walk finds the error.
    pub fn take(&self, limits: DecodeLimits, mut visit: impl FnMut(&SampleRef<'_>)) -> bool {
        let stacks = Stacks {
            bytes: self.bytes,
            n_types: self.n_types,
            strings: Err(self.n_strings),
            loc_ids: &self.locations.ids,
            loc_starts: &self.locations.starts,
            loc_frames: &self.locations.frames,
            loc_one: &self.one,
            ahead: self.ahead,
        };
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return false;
            }
            let Some(part) = self.parts.get(self.next.fetch_add(1, Ordering::Relaxed)) else {
                return true;
            };
            if stacks
                .walk(part.first, &part.runs, limits, &mut visit)
                .is_err()
            {
                self.failed.store(true, Ordering::Relaxed);
                return false;
            }
        }
    }
}

/// Sets the slot to None when dropped if nothing was put in it, so that a side
/// waiting for it is never left waiting (a panic on the setting side included).
struct SetOnDrop<'l, 't, 'a>(&'l OnceLock<Option<EarlyStacks<'t, 'a>>>);

impl Drop for SetOnDrop<'_, '_, '_> {
    fn drop(&mut self) {
        let _ = self.0.set(None);
    }
}

/// The function table, resolved: distinct names, and wire id -> name index.
struct Functions<'a> {
    names: Vec<Cow<'a, str>>,
    /// The index in `names` of every name from the string table, found by the name's
    /// hash: 4 bytes a slot, where a map from the name would hold 24.
    by_name: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Names made up for unsymbolised locations are owned, so they get their own map.
    address_names: HashMap<String, u32>,
    ids: IdMap,
    /// Whether `by_name` was let go of ([`Functions::let_go_of_names`]).
    names_forgotten: bool,
}

impl Functions<'_> {
    /// Frees the index by name while the samples are read beside it, where the ids
    /// are in order and so every name is its own: [`Functions::find`] makes it again
    /// from the names if an unsymbolised location needs it after all.
    fn let_go_of_names(&mut self) {
        if self.ids.in_order {
            self.by_name = HashTable::new();
            self.names_forgotten = true;
        }
    }

    /// The index of the function from the string table called `name`.
    fn find(&mut self, name: &str) -> Option<u32> {
        let Self {
            names,
            by_name,
            hasher,
            names_forgotten,
            ..
        } = self;
        if std::mem::take(names_forgotten) {
            by_name.reserve(names.len(), |&i| hasher.hash_one(&*names[i as usize]));
            for (i, n) in names.iter().enumerate() {
                if let Cow::Borrowed(n) = n {
                    by_name.insert_unique(hasher.hash_one(n), i as u32, |&i| {
                        hasher.hash_one(&*names[i as usize])
                    });
                }
            }
        }
        by_name
            .find(hasher.hash_one(name), |&i| names[i as usize] == name)
            .copied()
    }
}

fn function_table<'a>(
    bytes: &[u8],
    runs: &Runs,
    strings: &[&'a str],
) -> Result<Functions<'a>, DecodeError> {
    let mut names: Vec<Cow<'a, str>> = Vec::with_capacity(runs.count);
    let mut by_name = HashTable::with_capacity(runs.count);
    let hasher = foldhash::fast::RandomState::default();
    let mut ids = IdMap::new(runs.count);
    for m in runs.messages(bytes) {
        let [id, name] = varint_message(m, "Function", 5, RECURSION_LIMIT - 1)?;
        if id == 0 {
            return Err(invalid("function with id 0"));
        }
        let name = string_at(strings, name as i64, "function name")?;
        let same = |&i: &u32| names[i as usize] == name;
        let rehash = |&i: &u32| hasher.hash_one(&*names[i as usize]);
        let idx = match by_name.entry(hasher.hash_one(name), same, rehash) {
            hash_table::Entry::Occupied(e) => *e.get(),
            hash_table::Entry::Vacant(e) => {
                let i = u32_of(names.len(), "functions")?;
                e.insert(i);
                names.push(Cow::Borrowed(name));
                i
            }
        };
        if !ids.insert(id, idx) {
            return Err(invalid(format!("duplicate function id {id}")));
        }
    }
    Ok(Functions {
        names,
        by_name,
        hasher,
        address_names: HashMap::new(),
        ids,
        names_forgotten: false,
    })
}

/// In [`RawLocations::frames`]: a function id too large for the slot, kept in
/// [`RawLocations::wide`]; or the slot of a location without lines.
const WIDE: u32 = u32::MAX;

/// The location table as read from the wire, before its function ids are resolved.
#[derive(Debug)]
struct RawLocations {
    /// As [`Decoder::loc_starts`].
    starts: Vec<u32>,
    /// Per line, its function's wire id; [`WIDE`] for an id kept in `wide`, and one
    /// [`WIDE`] slot for each location without lines.
    frames: Vec<u32>,
    /// (slot in `frames`, function id) of every id of [`WIDE`] or more, in order.
    wide: Vec<(usize, u64)>,
    /// (location index, address) of every location without lines, in order.
    unsymbolised: Vec<(u32, u64)>,
    ids: IdMap,
    /// The first location that failed to read, why, and whether the check that failed
    /// comes after its lines are resolved; the locations before it were read.
    error: Option<(usize, DecodeError, bool)>,
    /// Where the location after the last one read ends in the profile.
    read_to: usize,
}

/// Reads every location up to the first that fails, checking everything but the
/// function ids its lines refer to. A failing location's error comes with whether the
/// check that failed comes after the lines are resolved (see [`RawLocations::resolve`]).
fn raw_location_table(bytes: &[u8], runs: &Runs) -> RawLocations {
    let mut t = RawLocations::new(runs.count);
    t.read_more(bytes, runs);
    t
}

impl RawLocations {
    /// An empty table for about `count` locations.
    fn new(count: usize) -> Self {
        let mut starts = Vec::with_capacity(count + 1);
        starts.push(0);
        Self {
            starts,
            frames: Vec::with_capacity(count),
            wide: Vec::new(),
            unsymbolised: Vec::new(),
            ids: IdMap::new(count),
            error: None,
            read_to: 0,
        }
    }

    /// Reads the locations of `runs` that are not read yet, up to the first that
    /// fails; `runs` may have grown since the last call.
    fn read_more(&mut self, bytes: &[u8], runs: &Runs) {
        if self.error.is_some() {
            return;
        }
        let mut lines: Vec<u64> = Vec::new();
        for (m, end) in runs.messages_from(bytes, self.read_to) {
            let i = self.starts.len() - 1;
            if let Err((e, after_lines)) = raw_location(self, i, m, &mut lines) {
                self.error = Some((i, e, after_lines));
                return;
            }
            self.read_to = end;
        }
    }
}

fn raw_location(
    t: &mut RawLocations,
    i: usize,
    m: &[u8],
    lines: &mut Vec<u64>,
) -> Result<(), (DecodeError, bool)> {
    let (id, address) = location(m, lines).map_err(|e| (e, false))?;
    if id == 0 {
        return Err((invalid("location with id 0"), false));
    }
    let after = |e| (e, true);
    let idx = u32_of(i, "locations").map_err(after)?;
    if lines.is_empty() {
        t.unsymbolised.push((idx, address));
        t.frames.push(WIDE);
    }
    for &function_id in lines.iter() {
        if function_id >= u64::from(WIDE) {
            t.wide.push((t.frames.len(), function_id));
            t.frames.push(WIDE);
        } else {
            t.frames.push(function_id as u32);
        }
    }
    t.starts
        .push(u32_of(t.frames.len(), "frames").map_err(after)?);
    if !t.ids.insert(id, idx) {
        return Err(after(invalid(format!("duplicate location id {id}"))));
    }
    Ok(())
}

impl RawLocations {
    /// Resolves every line to its function's name index, naming unsymbolised locations
    /// by their address as pprof prints them: (frames, one frame per location or
    /// [`MANY`]). The error is the one reading the locations one by one, each resolved
    /// as soon as it is read, would have met first.
    fn resolve(
        &mut self,
        bytes: &[u8],
        runs: &Runs,
        functions: &mut Functions<'_>,
    ) -> Result<(Vec<u32>, Vec<u32>), DecodeError> {
        match self.resolve_in_order(functions) {
            Some(resolved) => Ok(resolved),
            None => self.resolve_each(bytes, runs, functions),
        }
    }

    /// [`RawLocations::resolve`], one location after the other.
    fn resolve_each(
        &self,
        bytes: &[u8],
        runs: &Runs,
        functions: &mut Functions<'_>,
    ) -> Result<(Vec<u32>, Vec<u32>), DecodeError> {
        // Resolve the location that failed too if its lines came before the failure.
        let (read, read_error) = match &self.error {
            None => (self.starts.len() - 1, None),
            Some((i, e, after_lines)) => (i + usize::from(*after_lines), Some(e)),
        };
        // (A location too many to count failed before its frames were recorded.)
        let read = read.min(self.starts.len() - 1);
        let mut frames = Vec::with_capacity(self.frames.len());
        let mut wide = self.wide.iter();
        let mut unsymbolised = self.unsymbolised.iter().peekable();
        for loc in 0..read {
            let (a, b) = (self.starts[loc] as usize, self.starts[loc + 1] as usize);
            if let Some(&(_, address)) = unsymbolised.next_if(|&&(l, _)| l as usize == loc) {
                frames.push(address_name(functions, address)?);
            } else {
                for slot in a..b {
                    let raw = self.frames[slot];
                    let function_id = if raw == WIDE {
                        wide.next().map_or(u64::from(WIDE), |&(_, id)| id)
                    } else {
                        u64::from(raw)
                    };
                    let idx = functions.ids.get(function_id).ok_or_else(|| {
                        let id = runs
                            .messages(bytes)
                            .nth(loc)
                            .and_then(|m| location(m, &mut Vec::new()).ok())
                            .map_or(0, |(id, _)| id);
                        invalid(format!(
                            "location {id} refers to unknown function {function_id}"
                        ))
                    })?;
                    frames.push(idx);
                }
            }
        }
        match read_error {
            Some(e) => Err(e.clone()),
            None => {
                let one = one_frame_each(&self.starts, &frames);
                Ok((frames, one))
            }
        }
    }

    /// [`RawLocations::resolve`] where it is simple, as in every profile Go writes:
    /// every location read and symbolised, and function `k` (from 1) has id `k` and a
    /// name of its own, so that its index is its id less one. `None` where it is not.
    /// The frames are resolved where they lie, and moved out.
    fn resolve_in_order(&mut self, functions: &Functions<'_>) -> Option<(Vec<u32>, Vec<u32>)> {
        if !functions.ids.in_order {
            return None;
        }
        self.frames_in_order(functions.ids.len)?;
        let one = one_frame_each(&self.starts, &self.frames);
        Some((std::mem::take(&mut self.frames), one))
    }

    /// The frames resolved where they lie as if function `k` had id `k` and a name of
    /// its own, when every location was read and symbolised and every line names a
    /// function from 1 to `functions`; returns the largest function id. Nothing
    /// changes where it is None.
    fn frames_in_order(&mut self, functions: u64) -> Option<u64> {
        if self.error.is_some() || !self.wide.is_empty() || !self.unsymbolised.is_empty() {
            return None;
        }
        let mut largest = 0;
        for &f in &self.frames {
            if f == 0 {
                return None;
            }
            largest = largest.max(f);
        }
        if u64::from(largest) > functions {
            return None;
        }
        for f in &mut self.frames {
            *f -= 1;
        }
        Some(u64::from(largest))
    }

    /// Puts back the function ids [`RawLocations::frames_in_order`] resolved.
    fn undo_in_order(&mut self) {
        for f in &mut self.frames {
            *f += 1;
        }
    }
}

/// Per location (location `i` holds `frames[starts[i]..starts[i + 1]]`), its frame if
/// it has exactly one, else [`MANY`]: [`Decoder::loc_one`].
fn one_frame_each(starts: &[u32], frames: &[u32]) -> Vec<u32> {
    starts
        .windows(2)
        .map(|w| match &frames[w[0] as usize..w[1] as usize] {
            &[f] if f != MANY => f,
            _ => MANY,
        })
        .collect()
}

/// The name index of an unsymbolised location at `address`: its address as pprof
/// prints it, shared with a function of that name if there is one.
fn address_name(functions: &mut Functions<'_>, address: u64) -> Result<u32, DecodeError> {
    let name = format!("{address:016x}");
    let named = functions.find(&name);
    if let Some(i) = named.or_else(|| functions.address_names.get(&name).copied()) {
        return Ok(i);
    }
    let i = u32_of(functions.names.len(), "functions")?;
    functions.names.push(Cow::Owned(name.clone()));
    functions.address_names.insert(name, i);
    Ok(i)
}

/// Gives a wire error precedence over a reference error found by the fast path.
///
/// The fast path checks references as it goes, so a payload that is both inconsistent
/// and malformed further on could otherwise report the inconsistency. Decoding the
/// whole message with prost on that (rare, already failing) path keeps the verdict
/// the same as decoding first and resolving after.
pub fn wire_error_first<T>(bytes: &[u8], result: Result<T, DecodeError>) -> Result<T, DecodeError> {
    match result {
        Err(DecodeError::Invalid(_) | DecodeError::TooLarge { .. }) => {
            use prost::Message;
            if let Err(e) = super::profile::pb::Profile::decode(bytes) {
                return Err(DecodeError::Protobuf(e.to_string()));
            }
            result
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::decode::profile::pb;
    use crate::synth::{SynthConfig, SynthKind, generate};

    const NO_LIMIT: DecodeLimits = DecodeLimits {
        max_frames: u64::MAX,
    };

    #[test]
    fn strings_checked_a_stretch_at_a_time_are_checked_as_one_at_a_time() {
        // Short and long (a length of two bytes, the first past ASCII), ASCII and
        // not, empty, and broken: a lone continuation byte, a character cut at the
        // end of its string or at its start, bytes that are never UTF-8.
        let long = |unit: &[u8]| unit.repeat(200 / unit.len());
        let pool: Vec<Vec<u8>> = vec![
            b"main.main".to_vec(),
            b"".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            "\u{65e5}\u{672c}".as_bytes().to_vec(),
            "\u{1f600}".as_bytes().to_vec(),
            long(b"github.com/org/repo/pkg."),
            long("\u{e9}t\u{e9}".as_bytes()),
            b"ab\x80cd".to_vec(),
            b"ab\xc3".to_vec(),
            b"\xa9ab".to_vec(),
            b"\xff".to_vec(),
            [long(b"x"), b"\xe6\x97".to_vec()].concat(),
        ];
        let mut x = 7u32;
        let mut next = |n: usize| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as usize % n
        };
        for round in 0..400 {
            // Every other table only from the strings that are UTF-8, so that most
            // stretches are checked to their end.
            let valid = if round % 2 == 0 { 7 } else { pool.len() };
            let mut bytes = Vec::new();
            let mut ranges = Vec::new();
            for _ in 0..1 + next(30) {
                // Now and then another field between two strings (time_nanos).
                if next(8) == 0 {
                    bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]);
                }
                let s = &pool[next(valid)];
                bytes.push(6 << 3 | 2);
                prost::encoding::encode_varint(s.len() as u64, &mut bytes);
                ranges.push((bytes.len(), bytes.len() + s.len()));
                bytes.extend_from_slice(s);
            }
            let one_by_one: Result<Vec<&str>, _> = ranges
                .iter()
                .map(|&(a, b)| std::str::from_utf8(&bytes[a..b]).map_err(|_| not_utf8()))
                .collect();
            assert_eq!(utf8_strings(&bytes, &ranges), one_by_one, "round {round}");
        }
    }

    /// A synthetic heap profile of `samples` samples; `shift` moves every location id
    /// up, so that ids no longer give the index.
    fn profile(samples: usize, shift: u64) -> Vec<u8> {
        let mut p = generate(&SynthConfig {
            kind: SynthKind::Heap,
            seed: 7,
            samples,
            functions: 300,
            max_depth: 12,
        });
        for l in &mut p.location {
            l.id += shift;
        }
        for s in &mut p.sample {
            for id in &mut s.location_id {
                *id += shift;
            }
        }
        p.encode_to_vec()
    }

    #[test]
    fn samples_read_early_in_turn_in_either_order_are_each_read_once() {
        let bytes = profile(5000, 0);
        let (want, frames) = {
            let d = open(&bytes).unwrap();
            let mut frames = 0;
            d.samples(NO_LIMIT, |s| frames += s.frames.len()).unwrap();
            (d.sample_count(), frames)
        };
        let early = |e: &EarlyStacks<'_, '_>| {
            let (mut n, mut frames) = (0, 0);
            let read = e.take(NO_LIMIT, |s| {
                n += 1;
                frames += s.frames.len();
            });
            (read, n, frames)
        };
        fn run(
            bytes: &[u8],
            pair: &impl Pair,
            early: &(impl Fn(&EarlyStacks<'_, '_>) -> (bool, usize, usize) + Sync),
        ) -> Vec<(bool, usize, usize)> {
            let (_, results) = Walk::default()
                .finish_with(bytes, pair, Some(early))
                .unwrap();
            results.expect("the guess holds for a profile Go would write")
        }
        for results in [run(&bytes, &InTurn, &early), run(&bytes, &Reversed, &early)] {
            assert!(results.iter().all(|&(read, _, _)| read));
            assert_eq!(results.iter().map(|r| r.1).sum::<usize>(), want);
            assert_eq!(results.iter().map(|r| r.2).sum::<usize>(), frames);
        }
    }

    #[test]
    fn packed_varints_read_by_the_word_as_byte_by_byte() {
        // Varints of every length from 1 to 10 bytes, minimal or padded with 0x80
        // bytes, a tenth byte over 1 (invalid), and payloads cut anywhere.
        let mut rng = crate::synth::Rng::new(2);
        let mut next = || rng.next_u64();
        for case in 0..3000 {
            let mut packed = Vec::new();
            for _ in 0..next() % 12 {
                let bits = next() % 65;
                let mut one = Vec::new();
                prost::encoding::encode_varint(
                    if bits == 0 { 0 } else { next() >> (64 - bits) },
                    &mut one,
                );
                match next() % 16 {
                    // Padded: the last byte continued by an empty group.
                    0 if one.len() < 10 => {
                        *one.last_mut().unwrap() |= 0x80;
                        one.push(0);
                    }
                    1 => one.extend_from_slice(&[0xff; 9]),
                    2 => one = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                    _ => {}
                }
                packed.extend_from_slice(&one);
            }
            let cut = if case % 5 == 0 {
                next() as usize % (packed.len() + 1)
            } else {
                packed.len()
            };
            let packed = &packed[..cut];
            let mut field = Vec::new();
            prost::encoding::encode_varint(packed.len() as u64, &mut field);
            field.extend_from_slice(packed);
            let (mut want, mut got) = (Vec::new(), vec![7]);
            let a = Reader::new(&field, "Sample").repeated(LEN, |v| want.push(v));
            let b = Reader::new(&field, "Sample").repeated_into(LEN, &mut got);
            assert_eq!(b, a, "{packed:02x?}");
            if a.is_ok() {
                assert_eq!(got[1..], want[..], "{packed:02x?}");
            }
        }
    }

    /// (index, values, locations, frames, labels) of every sample a walk hands out.
    type Walked = Vec<(usize, Vec<i64>, Vec<u32>, Vec<u32>, Vec<(String, String)>)>;

    fn record(out: &mut Walked) -> impl FnMut(&SampleRef<'_>) + '_ {
        |s| {
            let labels = s.labels.iter().map(|&(k, v)| (k.into(), v.into()));
            out.push((
                s.index,
                s.values.to_vec(),
                s.locations.to_vec(),
                s.frames.to_vec(),
                labels.collect(),
            ))
        }
    }

    #[test]
    fn a_string_that_is_not_utf8_is_the_error_even_before_a_broken_field() {
        let mut bytes = profile(10, 0);
        // A string of one byte that is not UTF-8, then a sample cut short.
        bytes.extend_from_slice(&[0x32, 0x01, 0xff]);
        let not_utf8 = open(&bytes).err().unwrap();
        assert_eq!(not_utf8, super::not_utf8());
        bytes.extend_from_slice(&[0x12, 0x05, 0x08]);
        assert_eq!(open(&bytes).err().unwrap(), not_utf8);
        // The same bytes without the bad string fail on the cut sample.
        let cut = [&bytes[..bytes.len() - 6], &bytes[bytes.len() - 3..]].concat();
        let broken = open(&cut).err().unwrap();
        assert!(matches!(broken, DecodeError::Protobuf(_)));
        assert_ne!(broken, not_utf8);
    }

    #[test]
    fn parts_walk_the_same_samples_as_one_pass() {
        for shift in [0, 1000] {
            let bytes = profile(5 * MARK_EVERY + 17, shift);
            let d = open(&bytes).unwrap();
            assert_eq!(d.loc_ids.in_order, shift == 0);
            let mut whole = Walked::new();
            d.samples(NO_LIMIT, record(&mut whole)).unwrap();
            assert_eq!(whole.len(), d.sample_count());
            for n in 1..=8 {
                let parts = d.sample_parts(n);
                // Five marks: at most six parts, however many are asked for.
                assert_eq!(parts.len(), n.min(6), "{n} parts asked");
                assert!(parts.iter().all(|p| !p.is_empty()));
                let mut joined = Walked::new();
                for p in &parts {
                    let before = joined.len();
                    d.samples_in(p, NO_LIMIT, record(&mut joined)).unwrap();
                    assert_eq!(joined.len() - before, p.len());
                }
                assert_eq!(joined, whole, "{n} parts, ids shifted by {shift}");
            }
        }
    }

    #[test]
    fn samples_read_ahead_are_walked_as_samples_read_from_the_wire() {
        let n = 3 * MARK_EVERY + 17;
        let goroutines = |big_id: bool| {
            let mut p = generate(&SynthConfig {
                kind: SynthKind::Goroutine,
                seed: 11,
                samples: n,
                functions: 300,
                max_depth: 12,
            });
            if big_id {
                // A location whose id needs more than 16 bits: reading ahead ends at
                // the first sample that refers to it.
                let mut far = p.location[0].clone();
                far.id = 70_000;
                p.location.push(far);
                p.sample[1500].location_id.push(70_000);
            }
            p.encode_to_vec()
        };
        let cases = [
            ("heap: numeric labels", profile(n, 0), n),
            ("heap, ids shifted", profile(n, 1000), n),
            ("goroutines: string labels", goroutines(false), n),
            ("an id of 17 bits", goroutines(true), 1500),
        ];
        for (what, bytes, readable) in cases {
            let d = open(&bytes).unwrap();
            let mut want = Walked::new();
            d.samples(NO_LIMIT, record(&mut want)).unwrap();
            assert_eq!(want.len(), n);
            assert!(want.iter().any(|s| !s.4.is_empty()) != what.starts_with("heap"));
            let steps = [
                1,
                MARK_EVERY - 1,
                MARK_EVERY,
                MARK_EVERY + 5,
                2 * MARK_EVERY + 1,
            ];
            for ahead in steps.into_iter().chain([usize::MAX]) {
                let mut walk = Walk::default();
                walk.advance(&bytes);
                // In two calls, the second taking up where the first ended.
                let first = walk.read_samples_ahead(&bytes, ahead / 2);
                let second = walk.read_samples_ahead(&bytes, ahead - ahead / 2);
                assert_eq!(first + second, ahead.min(readable), "{what}: {ahead}");
                let d = walk.finish(&bytes, &InTurn).unwrap();
                assert_eq!(d.ahead.count, ahead.min(readable));
                let mut whole = Walked::new();
                d.samples(NO_LIMIT, record(&mut whole)).unwrap();
                assert!(whole == want, "{what}: {ahead} read ahead");
                for parts in [2, 3, 4] {
                    let mut joined = Walked::new();
                    for p in &d.sample_parts(parts) {
                        d.samples_in(p, NO_LIMIT, record(&mut joined)).unwrap();
                    }
                    assert!(joined == want, "{what}: {ahead} read ahead, {parts} parts");
                }
            }
        }
    }

    #[test]
    fn reading_ahead_ends_at_its_byte_budget() {
        // Heap samples: four values and a few ids each, about 53 bytes read ahead.
        let bytes = profile(50_000, 0);
        let mut walk = Walk::default();
        walk.advance(&bytes);
        let read = walk.read_samples_ahead(&bytes, usize::MAX);
        let a = &walk.ahead;
        let held = a.held();
        assert!(a.stopped && read == a.count, "{read}");
        assert!(read > 30_000 && read < 50_000, "{read}");
        assert!(
            held <= AHEAD_MAX_BYTES && held + 200 > AHEAD_MAX_BYTES,
            "{held}"
        );
        assert_eq!(walk.read_samples_ahead(&bytes, usize::MAX), 0);
        let mut want = Walked::new();
        open(&bytes)
            .unwrap()
            .samples(NO_LIMIT, record(&mut want))
            .unwrap();
        let mut got = Walked::new();
        let d = walk.finish(&bytes, &InTurn).unwrap();
        d.samples(NO_LIMIT, record(&mut got)).unwrap();
        assert!(got == want);
    }

    #[test]
    fn id_map_reads_no_table_only_while_ids_are_in_order() {
        let mut m = IdMap::new(4);
        for (id, idx) in [(1, 0), (2, 1), (3, 2)] {
            assert!(m.insert(id, idx));
        }
        assert!(m.in_order);
        assert_eq!(
            [0, 1, 3, 4].map(|id| m.get(id)),
            [None, Some(0), Some(2), None]
        );
        // A gap: 5 after 3 leaves 4 unknown, so the table answers from then on.
        assert!(m.insert(5, 3));
        assert!(!m.in_order);
        assert_eq!([3, 4, 5].map(|id| m.get(id)), [Some(2), None, Some(3)]);
        // The ids that came in order were filled in: a repeat of one is seen.
        assert!(!m.insert(2, 9));
        // A repeat that breaks the order is seen too.
        let mut m = IdMap::new(4);
        assert!(m.insert(1, 0) && m.insert(2, 1));
        assert!(!m.insert(1, 2));
        assert_eq!([1, 2].map(|id| m.get(id)), [Some(2), Some(1)]);
        // In order by id but not by index (functions sharing a name).
        let mut m = IdMap::new(2);
        assert!(m.insert(1, 0) && m.insert(2, 0));
        assert!(!m.in_order);
        assert_eq!(m.get(2), Some(0));
    }

    /// The tables of `bytes` as `finish` reads them, before locations are resolved.
    fn raw_tables(bytes: &[u8]) -> (Walk, RawLocations) {
        let mut walk = Walk::default();
        walk.walk(bytes).unwrap();
        let raw = raw_location_table(bytes, &walk.locations);
        (walk, raw)
    }

    #[test]
    fn locations_resolved_in_order_are_locations_resolved_one_by_one() {
        for kind in [SynthKind::Heap, SynthKind::Goroutine] {
            let bytes = generate(&SynthConfig {
                kind,
                seed: 9,
                samples: 500,
                functions: 200,
                max_depth: 20,
            })
            .encode_to_vec();
            let (walk, mut raw) = raw_tables(&bytes);
            let strings = walk.utf8(&bytes).unwrap();
            let mut functions = function_table(&bytes, &walk.function_runs, &strings).unwrap();
            let slow = raw.resolve_each(&bytes, &walk.locations, &mut functions);
            let fast = raw.resolve_in_order(&functions).expect("Go's layout");
            assert_eq!(Ok(&fast), slow.as_ref());
            // Locations of one frame and of more were both resolved.
            assert!(fast.1.contains(&MANY) && fast.1.iter().any(|&f| f != MANY));
        }
        // Where it is not simple, it leaves the work to `resolve_each`.
        let declined = |edit: &dyn Fn(&mut pb::Profile)| {
            let mut p = pb::Profile::decode(profile(50, 0).as_slice()).unwrap();
            edit(&mut p);
            let bytes = p.encode_to_vec();
            let (walk, mut raw) = raw_tables(&bytes);
            let strings = walk.utf8(&bytes).unwrap();
            let functions = function_table(&bytes, &walk.function_runs, &strings).unwrap();
            raw.resolve_in_order(&functions).is_none()
        };
        let n = pb::Profile::decode(profile(50, 0).as_slice())
            .unwrap()
            .function
            .len() as u64;
        assert!(!declined(&|_| {}));
        assert!(declined(&|p| p.location[3].line[0].function_id = n + 1));
        assert!(declined(&|p| p.location[3].line[0].function_id = 0));
        assert!(declined(&|p| p.location[3].line.clear()));
        assert!(declined(&|p| {
            for f in &mut p.function {
                f.id += 1;
            }
            for l in &mut p.location {
                for line in &mut l.line {
                    line.function_id += 1;
                }
            }
        }));
        assert!(declined(&|p| p.function[1].name = p.function[0].name));
    }

    #[test]
    fn a_small_profile_stays_in_one_part() {
        let bytes = profile(MARK_EVERY, 0);
        let d = open(&bytes).unwrap();
        let parts = d.sample_parts(4);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), MARK_EVERY);
    }

    #[test]
    fn errors_in_a_part_name_the_sample_by_its_place_in_the_profile() {
        let mut p = pb::Profile::decode(profile(3 * MARK_EVERY, 0).as_slice()).unwrap();
        let bad = 2 * MARK_EVERY + 5;
        p.sample[bad].location_id.push(999_999);
        let bytes = p.encode_to_vec();
        let d = open(&bytes).unwrap();
        let want = format!("invalid profile: sample {bad} refers to unknown location 999999");
        let whole = d.samples(NO_LIMIT, |_| {}).unwrap_err();
        assert_eq!(whole.to_string(), want);
        let parts = d.sample_parts(3);
        assert_eq!(parts.len(), 3);
        assert!(d.samples_in(&parts[0], NO_LIMIT, |_| {}).is_ok());
        assert!(d.samples_in(&parts[1], NO_LIMIT, |_| {}).is_ok());
        let part = d.samples_in(&parts[2], NO_LIMIT, |_| {}).unwrap_err();
        assert_eq!(part.to_string(), want);
    }

    #[test]
    fn one_frame_locations_resolve_like_their_span() {
        let bytes = profile(500, 0);
        let d = open(&bytes).unwrap();
        let mut many = 0;
        for (i, &one) in d.loc_one.iter().enumerate() {
            let (a, b) = d.loc_span(i as u32);
            let span = &d.loc_frames[a as usize..b as usize];
            if one == MANY {
                many += 1;
                assert_ne!(span.len(), 1, "location {i}");
            } else {
                assert_eq!(span, [one], "location {i}");
            }
        }
        // The generator inlines some calls: both kinds are exercised.
        assert!(
            many > 0 && many < d.loc_one.len(),
            "{many} multi-frame locations"
        );
    }
}
