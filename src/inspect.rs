//! `pprof-exporter inspect`: the exporter's per-function aggregation for a profile file
//! or URL, printed as a table (like `go tool pprof -top`) or as JSON.
//!
//! `--base` subtracts a base profile function by function, as `go tool pprof -base`
//! does: flat and cum are both linear in the sample values, so the difference of the
//! aggregates equals the aggregate of the difference.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::mpsc::TryRecvError;

use bytes::BytesMut;
use serde::Serialize;
use thiserror::Error;

use crate::aggregate::functions::FunctionAccumulator;
use crate::config::{Format, InspectArgs};
use crate::cores;
use crate::decode::stream::{self, Decoder, EarlyStacks, SampleRange, Walk};
use crate::decode::{self, DecodeError, ValueType, profile::DecodeLimits};
use crate::scrape::{FetchConfig, FetchError, Fetcher};

/// Why `inspect` could not produce a report.
#[derive(Debug, Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The path given.
        path: String,
        /// The error.
        error: String,
    },
    /// The URL could not be fetched.
    #[error("{url}: {error}")]
    Fetch {
        /// The URL given.
        url: String,
        /// The error.
        error: FetchError,
    },
    /// The bytes are not a usable profile.
    #[error("{source_name}: {error}")]
    Decode {
        /// The file or URL.
        source_name: String,
        /// The error.
        error: DecodeError,
    },
    /// The sample type asked for does not exist.
    #[error("{0}")]
    SampleType(String),
}

/// The JSON report. The function names borrow from the profile it was read from.
#[derive(Debug, Serialize, PartialEq)]
pub struct Report<'r> {
    /// The sample type shown.
    pub sample_type: String,
    /// Its unit.
    pub unit: String,
    /// Sum of all sample values (minus the base's, with `--base`).
    pub total: i64,
    /// Every function whose |cum| is at least `min_cum`, largest |flat| first, then
    /// largest |cum|.
    pub functions: Vec<FunctionEntry<'r>>,
    /// The share of the total that `min_cum` comes from (`--node-fraction`).
    #[serde(skip)]
    pub node_fraction: f64,
    /// Functions with a smaller |cum| are left out.
    #[serde(skip)]
    pub min_cum: u64,
    /// How many functions were left out for it.
    #[serde(skip)]
    pub dropped: usize,
}

/// One function of the report.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FunctionEntry<'r> {
    /// The function name.
    pub function: Cow<'r, str>,
    /// Flat value.
    pub flat: i64,
    /// Cumulative value.
    pub cum: i64,
}

/// The uncompressed profile bytes of a file or URL, within the byte limits of `args`,
/// and their top level as far as it was walked while they were inflated.
fn load(source: &str, args: &InspectArgs) -> Result<(Vec<u8>, Walk), InspectError> {
    let decode_err = |error| InspectError::Decode {
        source_name: source.to_owned(),
        error,
    };
    let limit = args.max_decompressed_bytes;
    if source.starts_with("http://") || source.starts_with("https://") {
        let body = fetch(source, args)?;
        if !decode::is_gzip(&body) {
            if body.len() as u64 > limit {
                return Err(decode_err(DecodeError::TooLarge { limit }));
            }
            return Ok((body, Walk::default()));
        }
        let guess = decode::size_guess(body.len() as u64);
        let declared = body.last_chunk::<4>().copied();
        let size = declared_size(declared, body.len() as u64, limit);
        let (_, loaded) = inflate_and_walk(&body[..], limit, guess, size);
        return loaded.map_err(decode_err);
    }
    let io = |e: std::io::Error| InspectError::Io {
        path: source.to_owned(),
        error: e.to_string(),
    };
    let too_big = || InspectError::Io {
        path: source.to_owned(),
        error: format!("larger than --max-bytes ({} bytes)", args.max_bytes),
    };
    let mut file = std::fs::File::open(source).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > args.max_bytes {
        return Err(too_big());
    }
    let declared = gzip_trailer(&mut file, size).map_err(io)?;
    // Inflate straight from the file: the compressed bytes never sit in memory.
    let mut input = BufReader::with_capacity(64 << 10, file.take(args.max_bytes + 1));
    if !decode::is_gzip(input.fill_buf().map_err(io)?) {
        let mut raw = Vec::with_capacity(size.min(limit) as usize);
        input.read_to_end(&mut raw).map_err(io)?;
        if raw.len() as u64 > args.max_bytes {
            return Err(too_big());
        }
        if raw.len() as u64 > limit {
            return Err(decode_err(DecodeError::TooLarge { limit }));
        }
        return Ok((raw, Walk::default()));
    }
    let declared = declared_size(declared, size, limit);
    let (input, loaded) = inflate_and_walk(input, limit, decode::size_guess(size), declared);
    // A file that grew past the limit while being read ends the stream early.
    if input.get_ref().limit() == 0 {
        return Err(too_big());
    }
    loaded.map_err(decode_err)
}

/// The last four bytes of `file`, `size` bytes long, which in a gzip file are the
/// uncompressed size modulo 2^32; the file is left at its start.
fn gzip_trailer(file: &mut std::fs::File, size: u64) -> std::io::Result<Option<[u8; 4]>> {
    // A header and a trailer take 18 bytes.
    if size < 18 {
        return Ok(None);
    }
    let mut trailer = [0; 4];
    file.seek(SeekFrom::End(-4))?;
    file.read_exact(&mut trailer)?;
    file.rewind()?;
    Ok(Some(trailer))
}

/// The uncompressed size that a gzip stream of `compressed` bytes ending in `trailer`
/// declares, if it is one to prepare for: no more than `limit`, and no more than
/// [`DECLARED_RATIO`] times `compressed`. It is only a hint: a stream of several
/// members declares the size of its last, and a hostile one anything.
fn declared_size(trailer: Option<[u8; 4]>, compressed: u64, limit: u64) -> Option<usize> {
    let size = u64::from(u32::from_le_bytes(trailer?));
    let plausible = size <= compressed.saturating_mul(DECLARED_RATIO) && size <= limit;
    plausible.then_some(size as usize)
}

/// The most, as a multiple of the compressed size, that [`inflate_and_walk`] takes a
/// gzip trailer's word for. Profiles compress 1-5x; past this, the pages are left for
/// the profile to fault in as it comes, rather than written ahead on a claim.
const DECLARED_RATIO: u64 = 8;

/// Bytes per chunk that [`inflate_and_walk`] lends its inflater. On the bench
/// profiles, 256 KiB and 512 KiB pieces were equally fast, 32-128 KiB and 1 MiB slower.
const PIECE: usize = 256 << 10;

/// How far past the bytes that have come [`inflate_and_walk`] faults pages in: a
/// trailer that overstates the size costs at most this much memory beyond the profile.
const ZEROS_AHEAD: usize = 4 << 20;

/// Chunks the inflater holds at a time (one being filled, the rest waiting), so that
/// it never waits for the walking thread while that thread walks what came before.
const CHUNKS_LENT: usize = 4;

/// Samples read ahead at a time while no chunk is waiting (about 10 µs of work on the
/// goroutine profile of the bench), so that a chunk that comes meanwhile waits little.
const AHEAD_STEP: usize = 128;

/// The buffer [`inflate_and_walk`] inflates into, lent to the inflater a chunk at a
/// time and joined back in order, so that the profile is never copied: `joined` is the
/// profile so far, `rest` the buffer not lent yet, `ready` chunks split off it whose
/// pages are faulted in.
struct Lender {
    joined: BytesMut,
    ready: VecDeque<BytesMut>,
    rest: BytesMut,
    /// Bytes split off the buffer so far.
    split: usize,
}

impl Lender {
    /// A buffer of `capacity` zeros: the allocator maps fresh pages for a large one,
    /// which cost nothing until written.
    fn new(capacity: usize) -> Self {
        let mut rest = BytesMut::zeroed(capacity);
        Lender {
            joined: rest.split_to(0),
            ready: VecDeque::new(),
            rest,
            split: 0,
        }
    }

    /// The next chunk of the buffer: one faulted in if there is one, else the next
    /// stretch as it is. Past the end of the buffer the chunks are new memory, which
    /// [`Lender::join`] copies.
    fn lend(&mut self) -> BytesMut {
        self.ready.pop_front().unwrap_or_else(|| self.split_off())
    }

    fn split_off(&mut self) -> BytesMut {
        if self.rest.is_empty() {
            return BytesMut::zeroed(PIECE);
        }
        let chunk = self.rest.split_to(PIECE.min(self.rest.len()));
        self.split += chunk.len();
        chunk
    }

    /// Faults in the pages of one more chunk before it is lent, if the buffer has one
    /// before `to`; returns whether it did. Writing zeros over zeros is the cheapest
    /// way to take the faults (about 2 µs per 4 KiB here) on this thread, which would
    /// otherwise wait, instead of on the inflater's.
    fn fault_in_before(&mut self, to: usize) -> bool {
        if self.split >= to || self.rest.is_empty() {
            return false;
        }
        let mut chunk = self.split_off();
        chunk.fill(0);
        self.ready.push_back(chunk);
        true
    }

    /// Appends a chunk the inflater filled; the chunks come back in the order lent.
    fn join(&mut self, chunk: BytesMut) {
        self.joined.unsplit(chunk);
    }

    /// The profile. Without a copy once the chunks still lent are dropped, as the
    /// others are here first.
    fn into_profile(self) -> Vec<u8> {
        let Lender {
            joined,
            ready,
            rest,
            ..
        } = self;
        drop((ready, rest));
        Vec::from(joined)
    }
}

/// Inflates the gzip stream `input` (see [`decode::inflate`]) on a helper core while
/// this thread gathers the output and walks the top level of what it has so far, so
/// that little of the walk is left when the inflater ends. The inflater writes into
/// chunks of one buffer lent by this thread ([`Lender`]), which joins them back as
/// they come; while it waits for the next, it first faults in the pages of the chunks
/// it will lend over the `declared` size of the profile (see [`declared_size`]), at
/// most [`ZEROS_AHEAD`] past what has come, then reads samples ahead
/// ([`Walk::read_samples_ahead`]). Returns `input` with the result. Where the process
/// may use only one core, inflates, then walks.
fn inflate_and_walk<R: BufRead + Send>(
    mut input: R,
    limit: u64,
    guess: u64,
    declared: Option<usize>,
) -> (R, Result<(Vec<u8>, Walk), DecodeError>) {
    let fault_to = declared.unwrap_or(0);
    let capacity = (guess.min(limit.saturating_add(1)) as usize).max(fault_to);
    // `cores::join` would run the two sides in turn, and the walking side would wait
    // for chunks that the inflater, not started yet, cannot send.
    if !cores::two_or_more() {
        let raw = decode::inflate(&mut input, limit, guess);
        return (input, raw.map(|raw| (raw, Walk::default())));
    }
    // Chunks to fill one way, filled ones back. The inflater waits for the next chunk
    // only after giving the last one back, which is replaced at once, so it never
    // waits long.
    let (lent_tx, lent_rx) = std::sync::mpsc::channel::<BytesMut>();
    let (full_tx, full_rx) = std::sync::mpsc::channel::<BytesMut>();
    let (raw_walk, (input, inflated)) = cores::join(
        move || {
            let mut buffer = Lender::new(capacity);
            // One chunk at once, the others as their pages are faulted in; from then
            // on every chunk that comes back is replaced at once.
            let _ = lent_tx.send(buffer.lend());
            let mut lent = 1;
            let mut walk = Walk::default();
            loop {
                let chunk = match full_rx.try_recv() {
                    Ok(chunk) => chunk,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        // No chunk yet: lend another, fault one in to lend later, or
                        // read a few samples ahead of the pass that adds them up,
                        // then look again.
                        let came = buffer.joined.len();
                        let fault_before = fault_to.min(came + ZEROS_AHEAD);
                        if lent < CHUNKS_LENT {
                            buffer.fault_in_before(fault_before);
                            // The inflater has gone if this fails, and with it its
                            // need of chunks.
                            let _ = lent_tx.send(buffer.lend());
                            lent += 1;
                            continue;
                        }
                        if buffer.fault_in_before(fault_before) {
                            continue;
                        }
                        if walk.read_samples_ahead(&buffer.joined, AHEAD_STEP) > 0 {
                            continue;
                        }
                        match full_rx.recv() {
                            Ok(chunk) => chunk,
                            Err(_) => break,
                        }
                    }
                };
                let _ = lent_tx.send(buffer.lend());
                buffer.join(chunk);
                // The chunks so far may end inside a field: the walk stops before it.
                walk.advance(&buffer.joined);
                walk.read_locations(&buffer.joined);
            }
            // Chunks lent and not used go with the channel.
            drop(lent_tx);
            (buffer.into_profile(), walk)
        },
        move || {
            let inflated = decode::inflate_into_chunks(
                &mut input,
                limit,
                // If the walking thread has gone (it panicked, which join passes
                // on), the inflater makes its own chunks.
                move || lent_rx.recv().unwrap_or_default(),
                move |full| {
                    let _ = full_tx.send(full);
                },
            );
            (input, inflated)
        },
    );
    (input, inflated.map(|()| raw_walk))
}

fn fetch(source: &str, args: &InspectArgs) -> Result<Vec<u8>, InspectError> {
    let url = crate::config::parse_target(source).map_err(|e| InspectError::Io {
        path: source.to_owned(),
        error: e,
    });
    // parse_target refuses queries, which profile URLs may carry (?gc=1): accept
    // any absolute http(s) URL here.
    let url = match url {
        Ok(u) => u,
        Err(_) => url::Url::parse(source).map_err(|e| InspectError::Io {
            path: source.to_owned(),
            error: e.to_string(),
        })?,
    };
    let fetcher = Fetcher::new(FetchConfig {
        timeout: args.timeout,
        max_body_bytes: args.max_bytes,
    })
    .map_err(|e| InspectError::Io {
        path: source.to_owned(),
        error: e,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InspectError::Io {
            path: source.to_owned(),
            error: e.to_string(),
        })?;
    Ok(rt
        .block_on(fetcher.get(&url))
        .map_err(|error| InspectError::Fetch {
            url: source.to_owned(),
            error,
        })?
        .to_vec())
}

/// (function, flat, cum) per function, the names borrowed from the profile.
type Rows<'r> = Vec<(Cow<'r, str>, i64, i64)>;

/// A profile aggregated by function for one sample type.
struct Aggregated<'r> {
    sample_type: ValueType,
    total: i64,
    /// Flat summed over every function, kept or not: the base of the node cutoff.
    flat_sum: i64,
    /// The node cutoff the rows were kept by.
    min_cum: u64,
    /// The functions kept, in no order.
    rows: Rows<'r>,
    /// The functions left out for their |cum|.
    dropped: usize,
    /// Whether the samples were added up while the function names were read.
    #[cfg_attr(not(test), allow(dead_code))]
    early: bool,
}

/// The smallest |cum| a function may have to be shown, for a share `fraction` of
/// `flat_sum`: `go tool pprof`'s node cutoff, truncated as Go converts to int64.
fn node_cutoff(flat_sum: i64, fraction: f64) -> u64 {
    ((flat_sum as f64 * fraction) as i64).unsigned_abs()
}

/// Decodes `raw` and aggregates it by function for the sample type `pick` chooses,
/// one sample at a time, straight from the wire, keeping the functions at or above the
/// node cutoff for `fraction`. The rows borrow the function names from `raw`: no name
/// is copied.
///
/// Where `pick` takes the profile's default sample type (`default_type`), the samples
/// are added up while the function names are read, on the guess that the default is
/// the only type or the last ([`stream::Walk::finish_with`]); if the guess or the
/// tables prove wrong, they are added up again from the decoder.
fn aggregate<'r>(
    source: &str,
    raw: &'r [u8],
    walk: Walk,
    pick: impl FnOnce(&Decoder<'r>) -> Result<usize, InspectError>,
    default_type: bool,
    fraction: f64,
) -> Result<Aggregated<'r>, InspectError> {
    let err = |error| InspectError::Decode {
        source_name: source.to_owned(),
        error,
    };
    // inspect is run by hand on files of any size: no frame limit.
    let limits = DecodeLimits {
        max_frames: u64::MAX,
    };
    let early = |e: &EarlyStacks<'_, '_>| {
        let index = match e.sample_type_count() {
            1 => 0,
            n if !e.declares_default() => n.checked_sub(1)?,
            _ => return None,
        };
        let mut acc = FunctionAccumulator::new(e.function_count(), &[index]);
        let read = e.take(limits, |s| acc.add(s.values, s.frames.iter().copied()));
        read.then_some((index, acc))
    };
    let finished = walk.finish_with(raw, &TwoCores, default_type.then_some(&early));
    let (d, read_early) = stream::wire_error_first(raw, finished).map_err(err)?;
    let index = match pick(&d) {
        Ok(i) => i,
        Err(e) => {
            // A broken profile is reported as such even when the type is wrong too.
            stream::wire_error_first(raw, d.samples(limits, |_| {})).map_err(err)?;
            return Err(e);
        }
    };
    let early_acc = read_early.and_then(|read| merged(read, index));
    let early = early_acc.is_some();
    let (done, acc) = match early_acc {
        Some(acc) => (Ok(()), acc),
        None => by_function_in_parallel(&d, index, limits),
    };
    stream::wire_error_first(raw, done).map_err(err)?;
    let flat_sum = acc.flat_sum(0);
    let min_cum = node_cutoff(flat_sum, fraction);
    let (total, rows, dropped) = acc.into_one_type(d.functions, 0, min_cum);
    Ok(Aggregated {
        sample_type: d.sample_types[index].clone(),
        total,
        flat_sum,
        min_cum,
        rows,
        dropped,
        early,
    })
}

/// The accumulators of [`stream::Walk::finish_with`]'s sides merged, if each side
/// guessed `index` for the sample type.
fn merged(
    read: Vec<Option<(usize, FunctionAccumulator)>>,
    index: usize,
) -> Option<FunctionAccumulator> {
    let mut accs = read.into_iter();
    let (first, mut acc) = accs.next()??;
    for side in accs {
        let (i, other) = side?;
        if i != first {
            return None;
        }
        acc.merge(&other);
    }
    (first == index).then_some(acc)
}

/// Reads the function and location tables of a profile at the same time.
struct TwoCores;

impl stream::Pair for TwoCores {
    fn both<A: Send, B: Send>(
        &self,
        first: impl FnOnce() -> A + Send,
        second: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        cores::join(first, second)
    }
}

/// `--node-fraction` for the table when none is given: `go tool pprof`'s default.
pub const DEFAULT_NODE_FRACTION: f64 = 0.005;

/// Most threads [`by_function_in_parallel`] uses: past this, merging the per-thread
/// tables and their memory cost more than the samples left to each thread.
const MAX_THREADS: usize = 4;

/// Flat and cum per function for sample type `index`, the samples cut into one part per
/// core (at most [`MAX_THREADS`]), each on its own core with its own accumulator,
/// merged in order. The first error in sample order wins, as in one pass.
fn by_function_in_parallel(
    d: &Decoder<'_>,
    index: usize,
    limits: DecodeLimits,
) -> (Result<(), DecodeError>, FunctionAccumulator) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = d.sample_parts(threads.min(MAX_THREADS));
    let n_funcs = d.functions.len();
    let run = |part: &SampleRange| {
        let mut acc = FunctionAccumulator::new(n_funcs, &[index]);
        let done = d.samples_in(part, limits, |s| {
            acc.add(s.values, s.frames.iter().copied())
        });
        (done, acc)
    };
    let mut results = in_parallel(&parts, &run).into_iter();
    let (mut done, mut acc) = results
        .next()
        .expect("sample_parts gives at least one part");
    for (part_done, part_acc) in results {
        if done.is_ok() {
            done = part_done;
        }
        acc.merge(&part_acc);
    }
    (done, acc)
}

/// `run` on every part, the first on this thread and the rest through
/// [`cores::join`]: each further part on a helper that leaves the core of the thread
/// that started it. The results come in the order of the parts.
fn in_parallel<P: Sync, R: Send>(parts: &[P], run: &(impl Fn(&P) -> R + Sync)) -> Vec<R> {
    match parts {
        [] => Vec::new(),
        [only] => vec![run(only)],
        [first, rest @ ..] => {
            let (mine, mut others) = cores::join(|| run(first), || in_parallel(rest, run));
            others.insert(0, mine);
            others
        }
    }
}

/// Builds the report for `args` and hands it to `show`, which gets what the report
/// borrows (the profile, with every function name in it) only for as long as it runs:
/// no name is copied, and the profile is freed in one piece afterwards.
pub fn report<T>(
    args: &InspectArgs,
    show: impl FnOnce(&Report<'_>) -> T,
) -> Result<T, InspectError> {
    let fraction = args.node_fraction.unwrap_or(match args.format {
        Format::Table => DEFAULT_NODE_FRACTION,
        Format::Json => 0.0,
    });
    let (raw, walk) = load(&args.source, args)?;
    // With a base, functions are left out after the subtraction.
    let own_fraction = if args.base.is_some() { 0.0 } else { fraction };
    let pick = |d: &Decoder<'_>| match &args.sample_index {
        Some(name) => d.sample_index(name).ok_or_else(|| {
            InspectError::SampleType(format!(
                "sample type {name:?} not in profile (it has: {})",
                d.sample_types
                    .iter()
                    .map(|t| t.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }),
        None => d
            .default_index()
            .ok_or_else(|| InspectError::SampleType("profile has no sample types".into())),
    };
    let mut agg = aggregate(
        &args.source,
        &raw,
        walk,
        pick,
        args.sample_index.is_none(),
        own_fraction,
    )?;
    let vt = agg.sample_type;

    let entry = |(function, flat, cum)| FunctionEntry {
        function,
        flat,
        cum,
    };
    // The base's names borrow from it as the profile's do from `raw`.
    let base_raw: Vec<u8>;
    let mut functions: Vec<FunctionEntry<'_>> = match &args.base {
        None => agg.rows.into_iter().map(entry).collect(),
        Some(base_src) => {
            let walk;
            (base_raw, walk) = load(base_src, args)?;
            let base = aggregate(
                base_src,
                &base_raw,
                walk,
                |d| {
                    d.sample_index(&vt.kind).ok_or_else(|| {
                        InspectError::SampleType(format!(
                            "base profile has no sample type {:?}",
                            vt.kind
                        ))
                    })
                },
                false,
                0.0,
            )?;
            // name -> (flat, cum)
            let mut by_name: HashMap<Cow<'_, str>, (i64, i64)> = agg
                .rows
                .into_iter()
                .map(|(name, flat, cum)| (name, (flat, cum)))
                .collect();
            for (name, flat, cum) in base.rows {
                let e = by_name.entry(name).or_default();
                e.0 -= flat;
                e.1 -= cum;
            }
            agg.total -= base.total;
            let min_cum = node_cutoff(agg.flat_sum - base.flat_sum, fraction);
            agg.min_cum = min_cum;
            // A function whose samples cancel out exactly has nothing to show, and
            // pprof, which merges the base into the profile first, does not list it.
            let dropped = &mut agg.dropped;
            by_name
                .into_iter()
                .filter(|(_, (f, c))| *f != 0 || *c != 0)
                .filter(|(_, (_, c))| {
                    let kept = c.unsigned_abs() >= min_cum;
                    *dropped += usize::from(!kept);
                    kept
                })
                .map(|(name, (flat, cum))| entry((name, flat, cum)))
                .collect()
        }
    };
    sort_rows(&mut functions);
    Ok(show(&Report {
        sample_type: vt.kind,
        unit: vt.unit,
        total: agg.total,
        functions,
        node_fraction: fraction,
        min_cum: agg.min_cum,
        dropped: agg.dropped,
    }))
}

/// Rows past which [`sort_rows`] sorts on two cores: about 0.1 ms of sorting, the
/// cost of starting the helper.
const TWO_CORE_SORT_ROWS: usize = 2_000;

/// Sorts `rows` as `go tool pprof -top` lists them: largest |flat| first, then largest
/// |cum|, then by name. Names are unique, so the order is total and an unstable sort
/// gives the same.
///
/// A comparison sort of many rows is bound by its unpredictable branches (19,433 rows
/// took 2 ms here, however the keys were packed), so a long table is split first: the
/// row that belongs in the middle is put there, with every row that sorts before it
/// ahead of it and the rest behind, and the two sides are sorted on two cores, with
/// nothing to merge afterwards.
fn sort_rows(rows: &mut [FunctionEntry<'_>]) {
    let order = |a: &FunctionEntry<'_>, b: &FunctionEntry<'_>| {
        b.flat
            .unsigned_abs()
            .cmp(&a.flat.unsigned_abs())
            .then(b.cum.unsigned_abs().cmp(&a.cum.unsigned_abs()))
            .then_with(|| a.function.cmp(&b.function))
    };
    if rows.len() < TWO_CORE_SORT_ROWS || !cores::two_or_more() {
        return rows.sort_unstable_by(order);
    }
    let (before, _, after) = rows.select_nth_unstable_by(rows.len() / 2, order);
    cores::join(
        || before.sort_unstable_by(order),
        || after.sort_unstable_by(order),
    );
}

/// Decimal digits of `n`, written right to left at the end of `buf` (which must have
/// room for 20); returns where they start.
fn digits(mut n: u64, buf: &mut [u8]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Appends `text` right-aligned in `width` columns.
fn pad(line: &mut Vec<u8>, width: usize, text: &[u8]) {
    line.resize(line.len() + width.saturating_sub(text.len()), b' ');
    line.extend_from_slice(text);
}

/// Appends `v` right-aligned in `width` columns.
fn int_cell(line: &mut Vec<u8>, width: usize, v: i64) {
    let mut buf = [0u8; 24];
    let mut i = digits(v.unsigned_abs(), &mut buf);
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    pad(line, width, &buf[i..]);
}

/// Appends `v`'s share of `total` as a percentage with two decimals (or `-`),
/// right-aligned in `width` columns.
///
/// Prints what `{:.2}` prints for `v * 100 / total` in f64. Rounding that value to
/// hundredths in f64 is exact unless it lies within a hair of a tie, so those rare
/// cases (and huge values) go through the formatter, and the rest are written from
/// integers: the formatter's exact decimal expansion was most of the cost of a table.
fn pct_cell(line: &mut Vec<u8>, width: usize, v: i64, total: i64) {
    if total == 0 {
        return pad(line, width, b"-");
    }
    let x = v as f64 * 100.0 / total as f64;
    let scaled = x.abs() * 100.0;
    let frac = scaled - scaled.trunc();
    if scaled >= 1e15 || (frac - 0.5).abs() < 1e-6 || x.is_nan() {
        return pad(line, width, format!("{x:.2}%").as_bytes());
    }
    let hundredths = scaled.round() as u64;
    let mut buf = [0u8; 24];
    buf[23] = b'%';
    buf[22] = b'0' + (hundredths % 10) as u8;
    buf[21] = b'0' + (hundredths / 10 % 10) as u8;
    buf[20] = b'.';
    // scaled < 1e15, so the whole part has at most 13 digits: room is left for a sign.
    let mut i = digits(hundredths / 100, &mut buf[..20]);
    if x.is_sign_negative() {
        i -= 1;
        buf[i] = b'-';
    }
    pad(line, width, &buf[i..]);
}

/// One percentage column of the table: [`pct_cell`], but a value the same as the row
/// above's reuses its cell. Down a table the flat share is mostly 0, the running sum
/// stops moving once the flat values are spent, and functions come in runs of equal
/// cum.
struct PctColumn {
    total: i64,
    last: Option<i64>,
    cell: Vec<u8>,
}

impl PctColumn {
    fn new(total: i64) -> Self {
        PctColumn {
            total,
            last: None,
            cell: Vec::with_capacity(32),
        }
    }

    /// Appends `v`'s cell, right-aligned in 7 columns.
    fn push(&mut self, line: &mut Vec<u8>, v: i64) {
        if self.last != Some(v) {
            self.cell.clear();
            pct_cell(&mut self.cell, 7, v, self.total);
            self.last = Some(v);
        }
        line.extend_from_slice(&self.cell);
    }
}

/// Writes a report in the requested format to `w`, a line at a time, so a table of
/// any length costs one line of memory.
pub fn render_to(
    w: &mut impl std::io::Write,
    report: &Report,
    format: Format,
    top: Option<usize>,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *w, report)?;
            w.write_all(b"\n")
        }
        Format::Table => {
            writeln!(w, "Type: {} ({})", report.sample_type, report.unit)?;
            writeln!(w, "Total: {} {}", report.total, report.unit)?;
            if report.dropped > 0 {
                writeln!(
                    w,
                    "Dropped {} functions with |cum| < {} (--node-fraction {})",
                    report.dropped, report.min_cum, report.node_fraction
                )?;
            }
            writeln!(
                w,
                "{:>14} {:>7} {:>7} {:>14} {:>7}  function",
                "flat", "flat%", "sum%", "cum", "cum%"
            )?;
            let mut sum = 0i64;
            let shown = top.unwrap_or(usize::MAX);
            let t = report.total;
            let (mut flat_pct, mut sum_pct, mut cum_pct) =
                (PctColumn::new(t), PctColumn::new(t), PctColumn::new(t));
            let mut line = Vec::with_capacity(256);
            for f in report.functions.iter().take(shown) {
                sum += f.flat;
                line.clear();
                int_cell(&mut line, 14, f.flat);
                line.push(b' ');
                flat_pct.push(&mut line, f.flat);
                line.push(b' ');
                sum_pct.push(&mut line, sum);
                line.push(b' ');
                int_cell(&mut line, 14, f.cum);
                line.push(b' ');
                cum_pct.push(&mut line, f.cum);
                line.extend_from_slice(b"  ");
                line.extend_from_slice(f.function.as_bytes());
                line.push(b'\n');
                w.write_all(&line)?;
            }
            if report.functions.len() > shown {
                writeln!(
                    w,
                    "({} more functions not shown)",
                    report.functions.len() - shown
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        DECLARED_RATIO, FunctionEntry, InspectError, PctColumn, TWO_CORE_SORT_ROWS, aggregate,
        declared_size, gzip_trailer, inflate_and_walk, int_cell, node_cutoff, pct_cell, sort_rows,
    };
    use crate::decode::profile::pb;
    use crate::decode::{self, DecodeError, stream};
    use std::io::Read;

    #[test]
    fn inflating_while_walking_gives_what_inflating_then_opening_gives() {
        use prost::Message;
        let p = crate::synth::generate(&crate::synth::SynthConfig {
            kind: crate::synth::SynthKind::Goroutine,
            seed: 3,
            samples: 3000,
            functions: 2000,
            max_depth: 20,
        });
        let raw = p.encode_to_vec();
        let gz = |bytes: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, bytes).unwrap();
            enc.finish().unwrap()
        };
        // Whole; cut inside the samples (the walk stops mid-profile); cut in the gzip.
        let whole = gz(&raw);
        let cut_profile = gz(&raw[..raw.len() / 3]);
        let cut_gzip = &whole[..whole.len() / 2];
        let limit = raw.len() as u64;
        let cases = [
            (&whole[..], limit),
            (&whole[..], limit - 1),
            (&cut_profile[..], limit),
            (cut_gzip, limit),
        ];
        // On two cores if there are two, and on one, where it inflates, then walks;
        // with a declared size that is right, too small, or too large.
        let two_ways = |z: &[u8], limit: u64, declared: Option<usize>| {
            let two = inflate_and_walk(z, limit, 0, declared).1;
            #[cfg(target_os = "linux")]
            {
                let one = crate::cores::on_one_core(|| inflate_and_walk(z, limit, 0, declared).1);
                let got = |r: &Result<(Vec<u8>, stream::Walk), DecodeError>| {
                    r.as_ref().map(|(raw, _)| raw.clone()).map_err(Clone::clone)
                };
                assert_eq!(got(&one), got(&two));
            }
            two
        };
        let declared = [
            None,
            Some(raw.len()),
            Some(raw.len() / 2),
            Some(raw.len() * 2),
        ];
        for ((z, limit), declared) in cases.into_iter().flat_map(|c| declared.map(|d| (c, d))) {
            let want = decode::inflate(&mut &z[..], limit, 0);
            let got = two_ways(z, limit, declared);
            match (want, got) {
                (Ok(want), Ok((got, walk))) => {
                    assert_eq!(got, want);
                    // Inflated into the buffer sized by the trailer, not copied out
                    // (on one core it is inflated as the daemon inflates).
                    let two = crate::cores::two_or_more();
                    if let Some(size) = declared.filter(|&size| two && size > want.len()) {
                        assert_eq!(got.capacity(), size);
                    }
                    let opened = stream::open(&want).map(stream::Decoder::into_tables);
                    let finished = walk.finish(&got, &stream::InTurn);
                    assert_eq!(finished.map(stream::Decoder::into_tables), opened);
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} vs {:?}", b.map(|(raw, _)| raw.len())),
            }
        }
    }

    #[test]
    fn a_gzip_trailer_declares_the_size_only_within_the_limit_and_the_ratio() {
        // Bytes that compress about as a profile does: a few bits of noise each.
        let mut x = 1u32;
        let raw: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                b'a' + (x >> 28) as u8
            })
            .collect();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        let z = enc.finish().unwrap();
        let n = z.len() as u64;
        let trailer = z.last_chunk::<4>().copied();
        let size = raw.len() as u64;
        // Within both bounds, the trailer's word is taken, from memory and from a file.
        assert!(
            size <= n * DECLARED_RATIO,
            "the test data compresses too well"
        );
        assert_eq!(declared_size(trailer, n, size), Some(raw.len()));
        let path = std::env::temp_dir().join(format!("trailer-{}.gz", std::process::id()));
        std::fs::write(&path, &z).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert_eq!(gzip_trailer(&mut file, n).unwrap(), trailer);
        // The file is back at its start.
        let mut again = Vec::new();
        file.read_to_end(&mut again).unwrap();
        assert_eq!(again, z);
        // Over the limit, or more than the ratio allows of what came: no hint.
        assert_eq!(declared_size(trailer, n, size - 1), None);
        assert_eq!(
            declared_size(trailer, size / DECLARED_RATIO - 1, size),
            None
        );
        // A hostile trailer cannot claim more than the ratio either.
        assert_eq!(declared_size(Some([0xff; 4]), n, u64::MAX), None);
        assert_eq!(declared_size(None, n, size), None);
        // A file too short to hold a gzip header and trailer has none.
        std::fs::write(&path, &z[..17]).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert_eq!(gzip_trailer(&mut file, 17).unwrap(), None);
        std::fs::remove_file(&path).unwrap();
    }

    /// What [`aggregate`] gives for `p` with every sample type: the total, flat sum
    /// and sorted rows, or the error; and whether the samples were read early. The
    /// walk has read `ahead` samples ahead.
    fn aggregated(p: &pb::Profile, default_type: bool, ahead: usize) -> (String, bool) {
        use prost::Message;
        let raw = p.encode_to_vec();
        let pick = |d: &stream::Decoder<'_>| {
            d.default_index()
                .ok_or_else(|| InspectError::SampleType("none".into()))
        };
        let mut walk = stream::Walk::default();
        if ahead > 0 {
            walk.advance(&raw);
            walk.read_samples_ahead(&raw, ahead);
        }
        match aggregate("p", &raw, walk, pick, default_type, 0.0) {
            Ok(mut a) => {
                a.rows.sort();
                let shown = format!(
                    "{} {} {} {:?}",
                    a.sample_type.kind, a.total, a.flat_sum, a.rows
                );
                (shown, a.early)
            }
            Err(e) => (e.to_string(), false),
        }
    }

    #[test]
    fn samples_read_beside_the_names_add_up_as_read_after_them() {
        let base = crate::synth::generate(&crate::synth::SynthConfig {
            kind: crate::synth::SynthKind::Goroutine,
            seed: 5,
            samples: 5000,
            functions: 800,
            max_depth: 16,
        });
        let heap = crate::synth::generate(&crate::synth::SynthConfig {
            kind: crate::synth::SynthKind::Heap,
            seed: 5,
            samples: 3000,
            functions: 500,
            max_depth: 12,
        });
        let string = |p: &mut pb::Profile, s: &str| {
            p.string_table.push(s.to_owned());
            p.string_table.len() as i64 - 1
        };
        // (what, profile, whether the early reading may be kept)
        let mut cases: Vec<(&str, pb::Profile, bool)> = vec![
            ("as generated", base.clone(), true),
            ("heap, no default type: the last", heap.clone(), true),
        ];
        let mut p = heap.clone();
        p.default_sample_type = p.sample_type[1].r#type;
        cases.push(("heap, a default type named", p, false));
        let mut p = base.clone();
        for f in &mut p.function {
            f.id += 5;
        }
        for l in &mut p.location {
            for line in &mut l.line {
                line.function_id += 5;
            }
        }
        cases.push(("function ids not from 1", p, false));
        let mut p = base.clone();
        p.function[7].name = p.function[3].name;
        cases.push(("two functions of one name", p, false));
        let mut p = base.clone();
        p.location[4].line.clear();
        cases.push(("an unsymbolised location", p, false));
        let mut p = base.clone();
        p.location.swap(2, 9);
        cases.push(("locations out of order", p, true));
        let mut p = base.clone();
        for l in &mut p.location {
            l.id += 1000;
        }
        for s in &mut p.sample {
            for id in &mut s.location_id {
                *id += 1000;
            }
        }
        cases.push(("location ids not from 1", p, true));
        let mut p = base.clone();
        let (key, value) = (string(&mut p, "k"), string(&mut p, "v"));
        p.sample[10].label.push(pb::Label {
            key,
            str: value,
            ..Default::default()
        });
        cases.push(("a string label", p, true));
        let mut p = base.clone();
        p.sample[4000].label.push(pb::Label {
            key: 1,
            str: 1 << 40,
            ..Default::default()
        });
        cases.push(("a label outside the strings", p, false));
        let mut p = base.clone();
        p.sample[4500].location_id.push(99_999);
        cases.push(("an unknown location", p, false));
        let mut p = base.clone();
        p.sample[10].value.push(1);
        cases.push(("a value too many", p, false));
        let mut p = base.clone();
        for s in &mut p.sample {
            s.value.push(1);
        }
        cases.push(("every sample a value too many", p, false));
        let mut p = base.clone();
        p.location[0].line[0].function_id = 100_000;
        cases.push(("an unknown function", p, false));
        let mut p = base.clone();
        p.function[0].name = 1 << 40;
        cases.push(("a name outside the strings", p, false));
        let mut p = base.clone();
        p.string_table[5] = String::new();
        p.sample.clear();
        cases.push(("no samples", p, true));
        for (what, p, kept) in cases {
            let (late, read_early) = aggregated(&p, false, 0);
            assert!(!read_early, "{what}");
            // With samples read ahead of the pass too: none, some, all.
            for ahead in [0, 2500, usize::MAX] {
                let (early, read_early) = aggregated(&p, true, ahead);
                assert_eq!(early, late, "{what}, {ahead} ahead");
                assert_eq!(read_early, kept, "{what}, {ahead} ahead: {early}");
                let (read_late, _) = aggregated(&p, false, ahead);
                assert_eq!(read_late, late, "{what}, {ahead} ahead");
            }
        }
    }

    #[test]
    fn the_node_cutoff_truncates_and_ignores_the_sign_as_pprof_does() {
        // Go: abs64(int64(float64(total) * fraction)).
        assert_eq!(node_cutoff(508_189, 0.005), 2540);
        assert_eq!(node_cutoff(999, 0.005), 4);
        assert_eq!(node_cutoff(-999, 0.005), 4);
        assert_eq!(node_cutoff(i64::MIN, 1.0), i64::MIN.unsigned_abs());
        assert_eq!(node_cutoff(12_345, 0.0), 0);
        assert_eq!(node_cutoff(12_345, 1.0), 12_345);
    }

    /// What the table printed before `pct` had its integer path.
    fn formatted(v: i64, total: i64) -> String {
        if total == 0 {
            "-".into()
        } else {
            format!("{:.2}%", v as f64 * 100.0 / total as f64)
        }
    }

    #[test]
    fn percentages_print_as_the_formatter_prints_them() {
        // Ties in hundredths of a percent (1/20000 = 0.005%), halves and quarters,
        // signs, zero, extremes, and a deterministic spread of ordinary values.
        let mut cases: Vec<(i64, i64)> = vec![
            (1, 20000),
            (3, 20000),
            (-1, 20000),
            (7, 40000),
            (1, 8),
            (1, 16),
            (1, 800),
            (3, 800),
            (5, 1600),
            (-1, 8),
            (-1, 800),
            (-1, 1_000_000),
            (0, 7),
            (0, -7),
            (1, -3),
            (7, 0),
            (i64::MAX, 1),
            (i64::MIN, 3),
            (1, i64::MAX),
            (2, 3),
            (1, 3),
            (508189, 508189),
        ];
        let mut rng = crate::synth::Rng::new(1);
        for _ in 0..200_000 {
            let total = rng.below(1_000_003) as i64 + 1;
            let v = rng.below(total as usize + 1) as i64;
            cases.push((v, total));
            cases.push((-v, total));
        }
        for (v, total) in cases {
            let mut out = Vec::new();
            pct_cell(&mut out, 9, v, total);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{:>9}", formatted(v, total)),
                "pct({v}, {total})"
            );
        }
    }

    #[test]
    fn integers_print_as_the_formatter_prints_them() {
        for v in [0, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN, -987654321] {
            let mut out = Vec::new();
            int_cell(&mut out, 14, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v:>14}"));
        }
    }

    /// Rows with many equal numbers, negative ones (as `--base` gives), and names that
    /// are prefixes of others, the numbers in no order.
    fn scrambled_rows(n: usize) -> Vec<FunctionEntry<'static>> {
        let mut rng = crate::synth::Rng::new(7);
        (0..n)
            .map(|i| {
                let r = rng.next_u64();
                let name = match r % 3 {
                    0 => format!("pkg.f{i}"),
                    1 => format!("example.com/svc/pkg{}.(*Server{i}).Handle", r % 7),
                    _ => format!("pkg.f{}", i * 10),
                };
                FunctionEntry {
                    function: name.into(),
                    flat: (r >> 8) as i64 % 4 - 2,
                    cum: (r >> 16) as i64 % 50 - 10,
                }
            })
            .collect()
    }

    #[test]
    fn rows_sorted_on_two_cores_come_in_the_order_of_one_sort() {
        for n in [0, 1, 7, TWO_CORE_SORT_ROWS - 1, TWO_CORE_SORT_ROWS, 6_001] {
            let mut rows = scrambled_rows(n);
            // Names must be unique for the order to be total.
            rows.sort_by(|a, b| a.function.cmp(&b.function));
            rows.dedup_by(|a, b| a.function == b.function);
            if n > 3 * TWO_CORE_SORT_ROWS {
                assert!(
                    rows.len() > TWO_CORE_SORT_ROWS,
                    "the two-core path is taken"
                );
            }
            let mut expected: Vec<_> = rows
                .iter()
                .map(|r| {
                    let key = (
                        std::cmp::Reverse(r.flat.unsigned_abs()),
                        std::cmp::Reverse(r.cum.unsigned_abs()),
                    );
                    (key, r.function.to_string(), r.flat, r.cum)
                })
                .collect();
            expected.sort();
            rows.reverse();
            sort_rows(&mut rows);
            let got: Vec<_> = rows
                .iter()
                .map(|r| (r.function.to_string(), r.flat, r.cum))
                .collect();
            let expected: Vec<_> = expected.into_iter().map(|(_, f, a, c)| (f, a, c)).collect();
            assert_eq!(got, expected, "{n} rows");
        }
    }

    #[test]
    fn a_percentage_column_prints_each_cell_as_the_formatter_does() {
        let total = 508_189;
        let values = [0, 0, 10_421, 10_421, 0, -3, -3, 508_189, 508_189, 1, 0];
        let mut column = PctColumn::new(total);
        for v in values {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            column.push(&mut got, v);
            pct_cell(&mut want, 7, v, total);
            assert_eq!(got, want, "{v}");
        }
    }
}
