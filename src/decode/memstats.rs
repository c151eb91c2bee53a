//! Parser for the `# runtime.MemStats` block of `heap?debug=1`.
//!
//! `net/http/pprof` ends the debug=1 heap text with Go's own memory accounting, one
//! `# Name = value` line per field (`# Stack = inuse / sys` for the pairs,
//! `# PauseNs = [..256 values..]` for the ring buffers), and on Unix a final
//! `# MaxRSS = bytes` from getrusage. The records before it can run to megabytes, so
//! only the tail is searched. The block holds no `PauseTotalNs`.

use super::{DecodeError, describe_payload};

/// How far from the end the block header is searched for. The block is the last thing
/// Go writes and is at most about 12 KiB (two rings of 256 twenty-digit numbers).
pub const FOOTER_WINDOW: usize = 64 << 10;

/// Entries in Go's `PauseNs` and `PauseEnd` ring buffers.
pub const PAUSE_RING: usize = 256;

const HEADER: &[u8] = b"# runtime.MemStats\n";

/// The MemStats block. A field is `None` when its line is missing, cut short or holds a
/// value that does not fit (the block is still usable without it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemStats {
    /// `Alloc`: bytes of allocated heap objects (same as `HeapAlloc`).
    pub alloc: Option<u64>,
    /// `TotalAlloc`: cumulative bytes allocated for heap objects.
    pub total_alloc: Option<u64>,
    /// `Sys`: total bytes of memory obtained from the OS.
    pub sys: Option<u64>,
    /// `Lookups`: pointer lookups by the runtime (always 0 in current Go).
    pub lookups: Option<u64>,
    /// `Mallocs`: cumulative heap objects allocated.
    pub mallocs: Option<u64>,
    /// `Frees`: cumulative heap objects freed.
    pub frees: Option<u64>,
    /// `HeapAlloc`: bytes of allocated heap objects.
    pub heap_alloc: Option<u64>,
    /// `HeapSys`: bytes of heap memory obtained from the OS.
    pub heap_sys: Option<u64>,
    /// `HeapIdle`: bytes in idle (unused) heap spans.
    pub heap_idle: Option<u64>,
    /// `HeapInuse`: bytes in in-use heap spans.
    pub heap_inuse: Option<u64>,
    /// `HeapReleased`: bytes of physical memory returned to the OS.
    pub heap_released: Option<u64>,
    /// `HeapObjects`: allocated heap objects.
    pub heap_objects: Option<u64>,
    /// `StackInuse`: bytes in stack spans.
    pub stack_inuse: Option<u64>,
    /// `StackSys`: stack bytes obtained from the OS.
    pub stack_sys: Option<u64>,
    /// `MSpanInuse`: bytes of allocated mspan structures.
    pub mspan_inuse: Option<u64>,
    /// `MSpanSys`: bytes obtained from the OS for mspan structures.
    pub mspan_sys: Option<u64>,
    /// `MCacheInuse`: bytes of allocated mcache structures.
    pub mcache_inuse: Option<u64>,
    /// `MCacheSys`: bytes obtained from the OS for mcache structures.
    pub mcache_sys: Option<u64>,
    /// `BuckHashSys`: bytes of profiling bucket hash tables.
    pub buck_hash_sys: Option<u64>,
    /// `GCSys`: bytes of garbage collection metadata.
    pub gc_sys: Option<u64>,
    /// `OtherSys`: bytes of miscellaneous off-heap runtime allocations.
    pub other_sys: Option<u64>,
    /// `NextGC`: the heap size the next GC cycle aims for.
    pub next_gc: Option<u64>,
    /// `LastGC`: when the last GC finished, in nanoseconds since the Unix epoch (0 if
    /// none ran).
    pub last_gc_ns: Option<u64>,
    /// `PauseNs`: ring of recent stop-the-world pause durations in nanoseconds; the most
    /// recent is at `(NumGC + 255) % 256`. Empty when the line is missing or malformed.
    pub pause_ns: Vec<u64>,
    /// `PauseEnd`: ring of recent pause end times in nanoseconds since the epoch,
    /// indexed like `pause_ns`.
    pub pause_end_ns: Vec<u64>,
    /// `NumGC`: completed GC cycles.
    pub num_gc: Option<u64>,
    /// `NumForcedGC`: GC cycles forced by the application calling `runtime.GC`.
    pub num_forced_gc: Option<u64>,
    /// `GCCPUFraction`: fraction of CPU time used by the GC since the program started.
    pub gc_cpu_fraction: Option<f64>,
    /// `DebugGC`: whether GC debugging is on (currently unused by Go).
    pub debug_gc: Option<bool>,
    /// `MaxRSS`: peak resident set size of the process in bytes, from getrusage (Unix
    /// only; not a MemStats field).
    pub max_rss: Option<u64>,
    /// The block ends before its last field (`DebugGC`) or in the middle of a line.
    pub truncated: bool,
}

impl MemStats {
    /// The most recent GC pause in nanoseconds, read from the `PauseNs` ring; `None`
    /// before the first GC or when the ring is missing.
    pub fn last_pause_ns(&self) -> Option<u64> {
        let n = self.num_gc?;
        if n == 0 || self.pause_ns.len() != PAUSE_RING {
            return None;
        }
        let slot = usize::try_from((n - 1) % PAUSE_RING as u64).ok()?;
        self.pause_ns.get(slot).copied()
    }
}

/// Finds and parses the MemStats block at the end of a `heap?debug=1` text. Only the
/// last [`FOOTER_WINDOW`] bytes are looked at.
///
/// Fails when there is no block (a proto heap profile, an HTML page, a body cut
/// before the block) or when the block holds no recognisable field.
pub fn parse_memstats(text: &[u8]) -> Result<MemStats, DecodeError> {
    let start = find_block(text, text.len().saturating_sub(FOOTER_WINDOW)).ok_or_else(|| {
        DecodeError::NotAProfile(format!(
            "no runtime.MemStats block in {}",
            describe_payload(text)
        ))
    })?;
    let block = &text[start + HEADER.len()..];

    let mut m = MemStats::default();
    let mut fields = 0usize;
    let mut saw_last = false;
    let mut lines = block.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            // After the final newline: empty when whole, a cut line otherwise.
            if !line.is_empty() {
                m.truncated = true;
            }
            break;
        }
        let Some(body) = line.strip_prefix(b"# ") else {
            // The block is the end of the text; anything else ends it.
            break;
        };
        let Some((key, value)) = split_once(body, b" = ") else {
            continue;
        };
        fields += usize::from(set_field(&mut m, key, value));
        saw_last |= key == b"DebugGC";
    }
    if fields == 0 {
        return Err(DecodeError::Invalid(
            "runtime.MemStats block has no readable field".to_owned(),
        ));
    }
    m.truncated |= !saw_last;
    Ok(m)
}

/// Offset in `text` of the last block header that starts a line at or after `from`.
fn find_block(text: &[u8], from: usize) -> Option<usize> {
    text.get(from..)?
        .windows(HEADER.len())
        .enumerate()
        .rev()
        .map(|(i, w)| (from + i, w))
        .find(|&(i, w)| w == HEADER && (i == 0 || text[i - 1] == b'\n'))
        .map(|(i, _)| i)
}

/// Stores one `key = value` line; returns whether the key is known (even if its value
/// did not parse, which leaves the field `None`).
fn set_field(m: &mut MemStats, key: &[u8], value: &[u8]) -> bool {
    let n = parse_u64(value);
    let slot = match key {
        b"Alloc" => &mut m.alloc,
        b"TotalAlloc" => &mut m.total_alloc,
        b"Sys" => &mut m.sys,
        b"Lookups" => &mut m.lookups,
        b"Mallocs" => &mut m.mallocs,
        b"Frees" => &mut m.frees,
        b"HeapAlloc" => &mut m.heap_alloc,
        b"HeapSys" => &mut m.heap_sys,
        b"HeapIdle" => &mut m.heap_idle,
        b"HeapInuse" => &mut m.heap_inuse,
        b"HeapReleased" => &mut m.heap_released,
        b"HeapObjects" => &mut m.heap_objects,
        b"BuckHashSys" => &mut m.buck_hash_sys,
        b"GCSys" => &mut m.gc_sys,
        b"OtherSys" => &mut m.other_sys,
        b"NextGC" => &mut m.next_gc,
        b"LastGC" => &mut m.last_gc_ns,
        b"NumGC" => &mut m.num_gc,
        b"NumForcedGC" => &mut m.num_forced_gc,
        b"MaxRSS" => &mut m.max_rss,
        b"Stack" | b"MSpan" | b"MCache" => {
            let (inuse, sys) = parse_pair(value).unzip();
            let (a, b) = match key {
                b"Stack" => (&mut m.stack_inuse, &mut m.stack_sys),
                b"MSpan" => (&mut m.mspan_inuse, &mut m.mspan_sys),
                _ => (&mut m.mcache_inuse, &mut m.mcache_sys),
            };
            (*a, *b) = (inuse, sys);
            return true;
        }
        b"PauseNs" => {
            m.pause_ns = parse_ring(value).unwrap_or_default();
            return true;
        }
        b"PauseEnd" => {
            m.pause_end_ns = parse_ring(value).unwrap_or_default();
            return true;
        }
        b"GCCPUFraction" => {
            m.gc_cpu_fraction = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f >= 0.0);
            return true;
        }
        b"DebugGC" => {
            m.debug_gc = match value {
                b"true" => Some(true),
                b"false" => Some(false),
                _ => None,
            };
            return true;
        }
        _ => return false,
    };
    *slot = n;
    true
}

/// `inuse / sys`.
fn parse_pair(value: &[u8]) -> Option<(u64, u64)> {
    let (a, b) = split_once(value, b" / ")?;
    Some((parse_u64(a)?, parse_u64(b)?))
}

/// `[n n n ...]` with at most [`PAUSE_RING`] entries.
fn parse_ring(value: &[u8]) -> Option<Vec<u64>> {
    let inner = value.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let mut out = Vec::with_capacity(PAUSE_RING);
    for word in inner.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        if out.len() == PAUSE_RING {
            return None;
        }
        out.push(parse_u64(word)?);
    }
    Some(out)
}

fn split_once<'a>(s: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let pos = s.windows(sep.len()).position(|w| w == sep)?;
    Some((&s[..pos], &s[pos + sep.len()..]))
}

/// A decimal `u64`; `None` on signs, spaces, other characters and overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO119: &[u8] = include_bytes!("../../tests/fixtures/text/heap-debug1-go1.19.txt");
    const GO127: &[u8] = include_bytes!("../../tests/fixtures/text/heap-debug1-go1.27.txt");

    /// The value after `# key = ` read with plain string functions, as a cross-check.
    fn raw(text: &[u8], key: &str) -> String {
        let text = std::str::from_utf8(text).unwrap();
        let prefix = format!("# {key} = ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key} line"))
            .to_owned()
    }

    fn block(lines: &str) -> Vec<u8> {
        format!("heap profile: 0: 0 [0: 0] @ heap/1048576\n\n# runtime.MemStats\n{lines}")
            .into_bytes()
    }

    #[test]
    fn fixtures_match_the_text() {
        for (name, text) in [("go1.19", GO119), ("go1.27", GO127)] {
            let m = parse_memstats(text).unwrap();
            assert!(!m.truncated, "{name}");
            let num = |k| raw(text, k).parse::<u64>().unwrap();
            assert_eq!(m.alloc, Some(num("Alloc")), "{name}");
            assert_eq!(m.sys, Some(num("Sys")), "{name}");
            assert_eq!(m.heap_inuse, Some(num("HeapInuse")), "{name}");
            assert_eq!(m.heap_released, Some(num("HeapReleased")), "{name}");
            assert_eq!(m.num_gc, Some(num("NumGC")), "{name}");
            assert_eq!(m.max_rss, Some(num("MaxRSS")), "{name}");
            let stack = raw(text, "Stack");
            let (inuse, sys) = stack.split_once(" / ").unwrap();
            assert_eq!(m.stack_inuse, Some(inuse.parse().unwrap()), "{name}");
            assert_eq!(m.stack_sys, Some(sys.parse().unwrap()), "{name}");
            let frac: f64 = raw(text, "GCCPUFraction").parse().unwrap();
            assert_eq!(m.gc_cpu_fraction, Some(frac), "{name}");
            assert_eq!(m.debug_gc, Some(false), "{name}");
            let pauses: Vec<u64> = raw(text, "PauseNs")
                .trim_matches(['[', ']'])
                .split(' ')
                .map(|w| w.parse().unwrap())
                .collect();
            assert_eq!(pauses.len(), PAUSE_RING, "{name}");
            assert_eq!(m.pause_ns, pauses, "{name}");
            assert_eq!(m.pause_end_ns.len(), PAUSE_RING, "{name}");
            let n = m.num_gc.unwrap() as usize;
            assert_eq!(m.last_pause_ns(), Some(pauses[(n + 255) % 256]), "{name}");
            // Every known field of the block is present in both versions.
            let all = [
                m.total_alloc,
                m.lookups,
                m.mallocs,
                m.frees,
                m.heap_alloc,
                m.heap_sys,
                m.heap_idle,
                m.heap_objects,
                m.mspan_inuse,
                m.mspan_sys,
                m.mcache_inuse,
                m.mcache_sys,
                m.buck_hash_sys,
                m.gc_sys,
                m.other_sys,
                m.next_gc,
                m.last_gc_ns,
                m.num_forced_gc,
            ];
            assert!(all.iter().all(Option::is_some), "{name}: {m:?}");
        }
    }

    #[test]
    fn missing_block_is_an_error() {
        for text in [
            &b""[..],
            b"heap profile: 1: 2 [3: 4] @ heap/1\n1: 2 [3: 4] @ 0x1\n",
            b"<html><body>404</body></html>",
            b"\x1f\x8b\x08\x00",
            // Not at the start of a line.
            b"x# runtime.MemStats\n# Alloc = 1\n",
            // The header is cut.
            b"\n# runtime.MemSt",
        ] {
            assert!(
                matches!(parse_memstats(text), Err(DecodeError::NotAProfile(_))),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(matches!(
            parse_memstats(&block("")),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            parse_memstats(&block("# Nonsense = 1\n")),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn only_the_tail_is_searched() {
        let mut text = block("# Alloc = 1\n# DebugGC = false\n");
        assert_eq!(parse_memstats(&text).unwrap().alloc, Some(1));
        // Megabytes of records before the block do not matter.
        let mut big = vec![b'#'; 4 << 20];
        big.extend_from_slice(&text);
        assert_eq!(parse_memstats(&big).unwrap().alloc, Some(1));
        // A block followed by more than the window is not the footer.
        text.extend(std::iter::repeat_n(b'\n', FOOTER_WINDOW));
        assert!(parse_memstats(&text).is_err());
    }

    #[test]
    fn odd_values_leave_fields_empty() {
        struct Case {
            line: &'static str,
            check: fn(&MemStats) -> bool,
        }
        let cases = [
            Case {
                line: "# Alloc = 99999999999999999999999",
                check: |m| m.alloc.is_none(),
            },
            Case {
                line: "# Alloc = 18446744073709551616",
                check: |m| m.alloc.is_none(),
            },
            Case {
                line: "# Alloc = 18446744073709551615",
                check: |m| m.alloc == Some(u64::MAX),
            },
            Case {
                line: "# Sys = -1",
                check: |m| m.sys.is_none(),
            },
            Case {
                line: "# Sys = 1e9",
                check: |m| m.sys.is_none(),
            },
            Case {
                line: "# Sys = ",
                check: |m| m.sys.is_none(),
            },
            Case {
                line: "# Stack = 5 / x",
                check: |m| m.stack_inuse.is_none() && m.stack_sys.is_none(),
            },
            Case {
                line: "# MSpan = 5 / 6",
                check: |m| m.mspan_inuse == Some(5) && m.mspan_sys == Some(6),
            },
            Case {
                line: "# MCache = 5",
                check: |m| m.mcache_inuse.is_none() && m.mcache_sys.is_none(),
            },
            Case {
                line: "# GCCPUFraction = NaN",
                check: |m| m.gc_cpu_fraction.is_none(),
            },
            Case {
                line: "# GCCPUFraction = +Inf",
                check: |m| m.gc_cpu_fraction.is_none(),
            },
            Case {
                line: "# GCCPUFraction = 1.5e-05",
                check: |m| m.gc_cpu_fraction == Some(1.5e-5),
            },
            Case {
                line: "# PauseNs = [1 2",
                check: |m| m.pause_ns.is_empty(),
            },
            Case {
                line: "# PauseNs = [1 x 2]",
                check: |m| m.pause_ns.is_empty(),
            },
            Case {
                line: "# PauseNs = [1 2 3]",
                check: |m| m.pause_ns == [1, 2, 3] && m.last_pause_ns().is_none(),
            },
            Case {
                line: "# DebugGC = maybe",
                check: |m| m.debug_gc.is_none(),
            },
        ];
        for c in cases {
            let text = block(&format!("# NumGC = 3\n# DebugGC = false\n{}\n", c.line));
            let m = parse_memstats(&text).unwrap();
            assert!((c.check)(&m), "{}: {m:?}", c.line);
            assert_eq!(m.num_gc, Some(3), "{}", c.line);
        }
        let ring = format!("[{}]", vec!["7"; PAUSE_RING + 1].join(" "));
        let m =
            parse_memstats(&block(&format!("# PauseNs = {ring}\n# DebugGC = false\n"))).unwrap();
        assert!(m.pause_ns.is_empty());
    }

    #[test]
    fn a_cut_block_keeps_whole_lines_only() {
        let full = parse_memstats(GO127).unwrap();
        let start = GO127
            .windows(HEADER.len())
            .position(|w| w == HEADER)
            .unwrap();
        for cut in start..GO127.len() {
            let Ok(m) = parse_memstats(&GO127[..cut]) else {
                // Only before the first field line is complete.
                assert!(
                    cut <= start + HEADER.len() + "# Alloc = 7261128".len(),
                    "cut at {cut}"
                );
                continue;
            };
            // A field is the true value or missing, never a shortened number.
            for (got, want) in [
                (m.alloc, full.alloc),
                (m.sys, full.sys),
                (m.heap_released, full.heap_released),
                (m.stack_sys, full.stack_sys),
                (m.next_gc, full.next_gc),
                (m.num_gc, full.num_gc),
                (m.max_rss, full.max_rss),
            ] {
                assert!(
                    got.is_none() || got == want,
                    "cut at {cut}: {got:?} vs {want:?}"
                );
            }
            assert!(
                m.pause_ns.is_empty() || m.pause_ns == full.pause_ns,
                "cut at {cut}"
            );
            if m.debug_gc.is_none() {
                assert!(m.truncated, "cut at {cut}");
            }
        }
    }
}
