//! Parser for `goroutine?debug=2` text dumps.
//!
//! The dump is `runtime.Stack(buf, true)`: one record per goroutine, separated by a
//! blank line. A record is a header, then frames leaf first (a function line with its
//! arguments, then a tab-indented `file:line +0x..` line), then for every goroutine but
//! the main one a `created by` line with its own location line (tabs shown as `→`):
//!
//! ```text
//! goroutine 20 [chan send, 2 minutes]:
//! main.blockedSender.func1()
//! →/src/main.go:76 +0x25
//! created by main.blockedSender in goroutine 1
//! →/src/main.go:75 +0x6a
//! ```
//!
//! Header forms handled (Go 1.19 to 1.27): the status alone (`[IO wait]`,
//! `[select (no cases)]`, `[sync.WaitGroup.Wait]`); the marks ` (leaked)` (Go >= 1.26,
//! a goroutine the GC proved can never wake), ` (scan)` (transient, during GC) and
//! ` (durable)` (synctest); then `, N minutes`, `, locked to thread` and
//! `, synctest bubble N`; `gp=... m=... mp=...` fields before the bracket (recent Go,
//! at traceback level 2 or in a crash; `runtime.Stack` forces level 1, so pprof dumps
//! normally lack them); and a `{key: value, ...}` label set after it (Go >= 1.27 with
//! `GODEBUG=tracebacklabels=1`, the default for modules declaring go 1.27).
//!
//! Go fills a buffer of at most 64 MiB and silently drops the rest, so a dump may end
//! in the middle of a record: what is complete is returned and the cut record is
//! reported through [`Dump::truncated`] instead of failing the whole scrape.

use super::{DecodeError, describe_payload};

/// The largest dump `net/http/pprof` serves: a dump of exactly this size was cut.
pub const GO_DUMP_LIMIT: usize = 64 << 20;

/// Frames kept per goroutine. Go prints at most 100 (the rest are elided), so more
/// than this is not a Go dump; the cap bounds memory on hostile input.
pub const MAX_FRAMES: usize = 512;

/// One goroutine of a debug=2 dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Goroutine {
    /// Goroutine id.
    pub id: u64,
    /// Status or wait reason (`chan send`, `IO wait`, `running`), without the
    /// `(leaked)` and `(scan)` marks.
    pub state: String,
    /// Whole minutes Go says the goroutine has been blocked; `None` when Go printed no
    /// wait time (under a minute, or not blocked).
    pub wait_minutes: Option<u64>,
    /// The `(leaked)` mark: a goroutine-leak GC (Go >= 1.26) found it can never wake.
    pub leaked: bool,
    /// Pinned to its OS thread (`runtime.LockOSThread`).
    pub locked_to_thread: bool,
    /// Function names, leaf first, without arguments.
    pub frames: Vec<String>,
    /// True when Go elided frames from the middle of the stack (or the stack was
    /// longer than [`MAX_FRAMES`]), so `frames` is not the whole stack.
    pub elided: bool,
    /// The function that started the goroutine (absent for the main goroutine).
    pub created_by: Option<String>,
    /// The goroutine that started it (printed since Go 1.21).
    pub created_by_goroutine: Option<u64>,
    /// Goroutine labels from the header (Go >= 1.27 with `tracebacklabels=1`), in the
    /// order Go printed them (sorted by key).
    pub labels: Vec<(String, String)>,
}

/// A parsed debug=2 dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Complete goroutine records, in dump order.
    pub goroutines: Vec<Goroutine>,
    /// The dump was cut: its final record was incomplete and has been left out, or the
    /// dump has exactly the size at which Go stops writing. Counts are then lower
    /// bounds.
    pub truncated: bool,
}

/// What the next line of a record may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Just after the header: a record needs at least one frame to be complete.
    FirstFrame,
    /// A function line, `created by`, an elision marker, or the end of the record.
    Frame,
    /// The location line of the function or `created by` line just read.
    Location,
}

/// Parses a `goroutine?debug=2` dump. Fails only when the text is not a dump at all
/// (empty, HTML, an error message, binary data); a dump cut short parses to its
/// complete records with [`Dump::truncated`] set.
pub fn parse_goroutines(text: &[u8]) -> Result<Dump, DecodeError> {
    parse_with_limit(text, GO_DUMP_LIMIT)
}

/// [`parse_goroutines`] with the size at which the writer is known to cut as a
/// parameter, so tests need not build a 64 MiB dump.
fn parse_with_limit(text: &[u8], dump_limit: usize) -> Result<Dump, DecodeError> {
    let body = trim_leading_blank_lines(text);
    if body.is_empty() {
        return Err(DecodeError::NotAProfile("empty goroutine dump".to_owned()));
    }
    let mut lines = body.split(|&b| b == b'\n').peekable();
    let first = lines.peek().copied().map(strip_cr).unwrap_or_default();
    let whole_first_line = body.contains(&b'\n');
    let looks_like_dump = if whole_first_line {
        parse_header(first).is_some()
    } else {
        // A dump cut inside its first line: nothing is complete, but it is a dump.
        first.starts_with(b"goroutine ")
    };
    if !looks_like_dump {
        return Err(DecodeError::NotAProfile(format!(
            "goroutine dump expected, got {}",
            describe_payload(body)
        )));
    }

    let mut dump = Dump::default();
    let mut current: Option<Goroutine> = None;
    let mut expect = Expect::FirstFrame;
    // Inside a `[originating from goroutine N]:` section (GODEBUG=tracebackancestors):
    // those frames belong to an ancestor, not to the current goroutine.
    let mut in_ancestor = false;
    let mut prev_blank = false;

    while let Some(raw) = lines.next() {
        if lines.peek().is_none() {
            // The text after the last newline: empty for a whole dump, otherwise a
            // line cut in the middle. After a blank line it starts the next record;
            // otherwise it belongs to the current one, which is then incomplete.
            if !raw.is_empty() {
                dump.truncated = true;
                if !prev_blank {
                    expect = Expect::Location;
                }
            }
            break;
        }
        let line = strip_cr(raw);
        prev_blank = line.is_empty();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = parse_header(line) {
            if let Some(done) = current.take() {
                // A record Go wrote before another header is whole even when it looks
                // odd (a stack the unwinder could not walk prints no frames).
                dump.goroutines.push(done);
            }
            current = Some(header);
            expect = Expect::FirstFrame;
            in_ancestor = false;
            continue;
        }
        let Some(g) = current.as_mut() else {
            continue;
        };
        if let Some(loc) = line.strip_prefix(b"\t") {
            match expect {
                Expect::Location => expect = Expect::Frame,
                // Printed instead of frames for a goroutine running on another thread.
                _ if loc.starts_with(b"goroutine running on other thread") => {
                    expect = Expect::Frame
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with(b"[originating from goroutine ") {
            in_ancestor = true;
            expect = Expect::Frame;
            continue;
        }
        if let Some(rest) = line.strip_prefix(b"created by ") {
            if !in_ancestor {
                let (name, parent) = parse_created_by(rest);
                g.created_by = Some(name);
                g.created_by_goroutine = parent;
            }
            expect = Expect::Location;
            continue;
        }
        if line.starts_with(b"...") && line.ends_with(b"elided...") {
            if !in_ancestor {
                g.elided = true;
            }
            continue;
        }
        if let Some(name) = function_name(line) {
            if !in_ancestor {
                if g.frames.len() < MAX_FRAMES {
                    g.frames.push(String::from_utf8_lossy(name).into_owned());
                } else {
                    g.elided = true;
                }
            }
            expect = Expect::Location;
        }
        // Anything else (unwinder diagnostics, `non-Go function` lines of cgo stacks)
        // carries nothing this parser reports.
    }
    finish(&mut dump, current, expect);
    if text.len() == dump_limit {
        dump.truncated = true;
    }
    Ok(dump)
}

/// Keeps the final record if it is complete, else marks the dump truncated: only the
/// final record of a dump can have been cut.
fn finish(dump: &mut Dump, g: Option<Goroutine>, expect: Expect) {
    let Some(g) = g else { return };
    if expect == Expect::Frame {
        dump.goroutines.push(g);
    } else {
        dump.truncated = true;
    }
}

fn trim_leading_blank_lines(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
        .unwrap_or(text.len());
    // Keep a leading tab or space of the first real line: only whole blank lines go.
    let line_start = text[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    &text[line_start..]
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The function name of a frame line `pkg.Func(args)`: everything before the argument
/// list. Go never prints parentheses inside the arguments, so the last `(` opens them,
/// while those in `pkg.(*T).M` come earlier.
fn function_name(line: &[u8]) -> Option<&[u8]> {
    if !line.ends_with(b")") || line.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'(')?;
    let name = &line[..open];
    if name.is_empty() || name.contains(&b' ') {
        return None;
    }
    Some(name)
}

/// `pkg.F in goroutine 7` (Go >= 1.21) or `pkg.F`.
fn parse_created_by(rest: &[u8]) -> (String, Option<u64>) {
    const MARK: &[u8] = b" in goroutine ";
    if let Some(pos) = find(rest, MARK) {
        if let Some(id) = parse_u64(&rest[pos + MARK.len()..]) {
            return (String::from_utf8_lossy(&rest[..pos]).into_owned(), Some(id));
        }
    }
    (String::from_utf8_lossy(rest).into_owned(), None)
}

/// Parses a header line into a goroutine with no frames yet; `None` if the line is not
/// a header.
///
/// Grammar: `goroutine <id> [<fields> ]"[" status {" (mark)"} {", " attr} "]"
/// [" {" labels "}"] ":"`.
fn parse_header(line: &[u8]) -> Option<Goroutine> {
    let rest = line.strip_prefix(b"goroutine ")?;
    let rest = rest.strip_suffix(b":")?;
    let id_end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    let id = parse_u64(&rest[..id_end])?;
    let rest = &rest[id_end..];
    let open = rest.iter().position(|&b| b == b'[')?;
    // Between the id and the bracket only `key=value` fields (`gp=`, `m=`, `mp=`).
    let fields = &rest[..open];
    if !fields.starts_with(b" ")
        || !fields
            .split(|&b| b == b' ')
            .all(|f| f.is_empty() || f.contains(&b'='))
    {
        return None;
    }
    let inner_and_tail = &rest[open + 1..];
    let close = inner_and_tail.iter().position(|&b| b == b']')?;
    let inner = &inner_and_tail[..close];
    let tail = &inner_and_tail[close + 1..];

    let mut g = Goroutine {
        id,
        ..Goroutine::default()
    };
    let mut parts = split_str(inner, b", ");
    let status = parts.next().unwrap_or_default();
    let (state, leaked) = clean_status(status);
    g.state = state;
    g.leaked = leaked;
    for part in parts {
        if let Some(n) = part.strip_suffix(b" minutes") {
            g.wait_minutes = parse_u64(n);
        } else if part == b"locked to thread" {
            g.locked_to_thread = true;
        }
        // `synctest bubble N` and anything newer carry nothing reported here.
    }
    if !tail.is_empty() {
        let labels = tail.strip_prefix(b" {")?.strip_suffix(b"}")?;
        // A label set that does not parse still leaves a usable goroutine.
        g.labels = parse_labels(labels).unwrap_or_default();
    }
    Some(g)
}

/// Removes the ` (leaked)` and ` (scan)` marks from a status, reporting the first.
/// ` (durable)` stays: some wait reasons carry it in their own name, so keeping it
/// everywhere keeps the state values consistent.
fn clean_status(status: &[u8]) -> (String, bool) {
    let mut s = String::from_utf8_lossy(status).into_owned();
    let leaked = s.contains(" (leaked)");
    if leaked {
        s = s.replace(" (leaked)", "");
    }
    if s.contains(" (scan)") {
        s = s.replace(" (scan)", "");
    }
    (s, leaked)
}

/// Parses `k: v, k2: "v 2"`: bare words (`[A-Za-z0-9./_]`) or Go-quoted strings.
fn parse_labels(mut s: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = label_token(s, b':')?;
        let rest = rest.strip_prefix(b": ")?;
        let (value, rest) = label_token(rest, b',')?;
        out.push((key, value));
        s = match rest.strip_prefix(b", ") {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(out)
}

/// One label key or value and the text after it. Bare tokens end at `stop`.
fn label_token(s: &[u8], stop: u8) -> Option<(String, &[u8])> {
    if s.first() != Some(&b'"') {
        let end = s.iter().position(|&b| b == stop).unwrap_or(s.len());
        return Some((String::from_utf8_lossy(&s[..end]).into_owned(), &s[end..]));
    }
    let mut bytes = Vec::new();
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some((String::from_utf8_lossy(&bytes).into_owned(), &s[i + 1..])),
            b'\\' => {
                let esc = *s.get(i + 1)?;
                i += 2;
                match esc {
                    b'n' => bytes.push(b'\n'),
                    b'r' => bytes.push(b'\r'),
                    b't' => bytes.push(b'\t'),
                    b'x' | b'u' | b'U' => {
                        let digits = match esc {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = s.get(i..i + digits)?;
                        let v = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                        i += digits;
                        if esc == b'x' {
                            // `\xHH` is a raw byte: an invalid UTF-8 byte or a control
                            // character.
                            bytes.push(u8::try_from(v).ok()?);
                        } else {
                            let c = char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER);
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                    other => bytes.push(other),
                }
            }
            b => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    None
}

fn split_str<'a>(s: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let cur = rest?;
        match find(cur, sep) {
            Some(pos) => {
                rest = Some(&cur[pos + sep.len()..]);
                Some(&cur[..pos])
            }
            None => {
                rest = None;
                Some(cur)
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A decimal `u64`; `None` on anything else, including overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::goroutines::blocking_function;

    const GO119: &[u8] = include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.19.txt");
    const GO127: &[u8] = include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.27.txt");
    const GO127_LEAKED: &[u8] =
        include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.27-leaked.txt");

    fn header(line: &str) -> Option<Goroutine> {
        parse_header(line.as_bytes())
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Goroutines per (blocking function, state, leaked), as the aggregate stage sees them.
    fn counts(dump: &Dump) -> std::collections::BTreeMap<(String, String, bool), usize> {
        let mut out = std::collections::BTreeMap::new();
        for g in &dump.goroutines {
            let names: Vec<&str> = g.frames.iter().map(String::as_str).collect();
            let key = (
                blocking_function(&names).to_owned(),
                g.state.clone(),
                g.leaked,
            );
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    /// Independent counts straight from the text: header lines whose bracket starts
    /// with `[state` and lines that are exactly `call`.
    fn text_counts(text: &[u8], state: &str, call: &str) -> (usize, usize) {
        let text = std::str::from_utf8(text).unwrap();
        let headers = text
            .lines()
            .filter(|l| l.starts_with("goroutine "))
            .filter(|l| {
                let inner = &l[l.find('[').unwrap() + 1..l.find(']').unwrap()];
                let status = inner.split(", ").next().unwrap().replace(" (leaked)", "");
                status == state
            })
            .count();
        let calls = text.lines().filter(|l| *l == call).count();
        (headers, calls)
    }

    #[test]
    fn header_forms() {
        struct Case {
            line: &'static str,
            id: u64,
            state: &'static str,
            wait: Option<u64>,
            leaked: bool,
            locked: bool,
            labels: &'static [(&'static str, &'static str)],
        }
        let case = |line, id, state, wait, leaked, locked| Case {
            line,
            id,
            state,
            wait,
            leaked,
            locked,
            labels: &[],
        };
        let cases = [
            case(
                "goroutine 20 [chan send, 2 minutes]:",
                20,
                "chan send",
                Some(2),
                false,
                false,
            ),
            case(
                "goroutine 5 [select (no cases)]:",
                5,
                "select (no cases)",
                None,
                false,
                false,
            ),
            case(
                "goroutine 5 [select (no cases) (leaked)]:",
                5,
                "select (no cases)",
                None,
                true,
                false,
            ),
            case(
                "goroutine 6 [chan send (leaked)]:",
                6,
                "chan send",
                None,
                true,
                false,
            ),
            case(
                "goroutine 6 [chan send (leaked), 4 minutes]:",
                6,
                "chan send",
                Some(4),
                true,
                false,
            ),
            case(
                "goroutine 7 [semacquire, 5 minutes, locked to thread]:",
                7,
                "semacquire",
                Some(5),
                false,
                true,
            ),
            case(
                "goroutine 8 [syscall, locked to thread]:",
                8,
                "syscall",
                None,
                false,
                true,
            ),
            case(
                "goroutine 1 gp=0xc000002380 m=0 mp=0x5c6a80 [running]:",
                1,
                "running",
                None,
                false,
                false,
            ),
            case(
                "goroutine 9 gp=0xc000003500 m=nil [sync.WaitGroup.Wait, 12 minutes]:",
                9,
                "sync.WaitGroup.Wait",
                Some(12),
                false,
                false,
            ),
            case("goroutine 10 [IO wait]:", 10, "IO wait", None, false, false),
            case("goroutine 11 [sleep]:", 11, "sleep", None, false, false),
            case(
                "goroutine 12 [chan receive (nil chan)]:",
                12,
                "chan receive (nil chan)",
                None,
                false,
                false,
            ),
            case(
                "goroutine 13 [GC worker (idle)]:",
                13,
                "GC worker (idle)",
                None,
                false,
                false,
            ),
            case(
                "goroutine 14 [chan receive (scan), 3 minutes]:",
                14,
                "chan receive",
                Some(3),
                false,
                false,
            ),
            case(
                "goroutine 15 [chan receive (leaked) (scan)]:",
                15,
                "chan receive",
                None,
                true,
                false,
            ),
            case(
                "goroutine 16 [sync.Cond.Wait (durable), synctest bubble 4]:",
                16,
                "sync.Cond.Wait (durable)",
                None,
                false,
                false,
            ),
            case(
                "goroutine 17 [chan send, 1 minutes, locked to thread, synctest bubble 2]:",
                17,
                "chan send",
                Some(1),
                false,
                true,
            ),
            // A wait too long for u64 is dropped, the goroutine is kept.
            case(
                "goroutine 18 [chan send, 99999999999999999999999 minutes]:",
                18,
                "chan send",
                None,
                false,
                false,
            ),
            case(
                "goroutine 18446744073709551615 [running]:",
                u64::MAX,
                "running",
                None,
                false,
                false,
            ),
            Case {
                labels: &[("worker", "ingest")],
                ..case(
                    "goroutine 48 [chan receive, 3 minutes] {worker: ingest}:",
                    48,
                    "chan receive",
                    Some(3),
                    false,
                    false,
                )
            },
            Case {
                labels: &[("/fizzle", "bit"), ("foo_bar", "baz.")],
                ..case(
                    "goroutine 2 [select] {/fizzle: bit, foo_bar: baz.}:",
                    2,
                    "select",
                    None,
                    false,
                    false,
                )
            },
            Case {
                labels: &[("fizzle", "b\x1bit"), ("foo\"ba\0r", "baz\n")],
                ..case(
                    r#"goroutine 3 [select] {fizzle: "b\x1bit", "foo\"ba\x00r": "baz\n"}:"#,
                    3,
                    "select",
                    None,
                    false,
                    false,
                )
            },
            Case {
                labels: &[
                    ("fizz\tle", "\u{45678}boop"),
                    ("k", "\u{1234}\u{3a3}"),
                    ("fiz\\zl\re", "a:b, c}"),
                ],
                ..case(
                    r#"goroutine 4 [select] {"fizz\tle": "\U00045678boop", k: "\u1234\u03a3", "fiz\\zl\re": "a:b, c}"}:"#,
                    4,
                    "select",
                    None,
                    false,
                    false,
                )
            },
        ];
        for c in cases {
            let g = header(c.line).unwrap_or_else(|| panic!("not a header: {}", c.line));
            assert_eq!(g.id, c.id, "{}", c.line);
            assert_eq!(g.state, c.state, "{}", c.line);
            assert_eq!(g.wait_minutes, c.wait, "{}", c.line);
            assert_eq!(g.leaked, c.leaked, "{}", c.line);
            assert_eq!(g.locked_to_thread, c.locked, "{}", c.line);
            assert_eq!(g.labels, labels(c.labels), "{}", c.line);
        }
    }

    #[test]
    fn not_headers() {
        for line in [
            "goroutine running on other thread; stack unavailable",
            "goroutine x [running]:",
            "goroutine 1 [running]",
            "goroutine 1 running:",
            "goroutine 1[running]:",
            "goroutine 1 foo [running]:",
            "goroutine 1 [running:",
            "goroutine 1 [running] junk:",
            "goroutine 99999999999999999999999 [running]:",
            "goroutine  [running]:",
            "[originating from goroutine 5]:",
            "",
        ] {
            assert_eq!(header(line), None, "{line:?}");
        }
        // A malformed label set keeps the goroutine and drops the labels.
        let g = header(r#"goroutine 1 [running] {"unterminated: x}:"#).unwrap();
        assert!(g.labels.is_empty());
    }

    #[test]
    fn records() {
        struct Case {
            name: &'static str,
            text: &'static str,
            frames: &'static [&'static str],
            created_by: Option<&'static str>,
            parent: Option<u64>,
            elided: bool,
        }
        let cases = [
            Case {
                name: "go1.21+ created by with parent",
                text: "goroutine 20 [chan send, 2 minutes]:\nmain.blockedSender.func1()\n\t/src/main.go:76 +0x25\ncreated by main.blockedSender in goroutine 1\n\t/src/main.go:75 +0x6a\n",
                frames: &["main.blockedSender.func1"],
                created_by: Some("main.blockedSender"),
                parent: Some(1),
                elided: false,
            },
            Case {
                name: "go1.19 created by",
                text: "goroutine 6 [chan send]:\nmain.blockedSender.func1()\n\t/src/main.go:76 +0x25\ncreated by main.blockedSender\n\t/src/main.go:75 +0x6a\n",
                frames: &["main.blockedSender.func1"],
                created_by: Some("main.blockedSender"),
                parent: None,
                elided: false,
            },
            Case {
                name: "methods, generics, closures, inlined and panic frames",
                text: "goroutine 7 [running]:\npanic({0x6a1b20?, 0x7c0e90?})\n\t/go/src/runtime/panic.go:770 +0x132\nmain.(*Tree[...]).Walk.func1.2(...)\n\t/src/t.go:9\nmain.Map[...]({0xc000010000, 0x3, 0x3}, 0x5)\n\t/src/m.go:4 +0x5a\nnet/http.(*conn).serve(0xc0000aa280, {0x767a40, 0xc000096f90})\n\t/go/src/net/http/server.go:1991 +0x607\nmain.main.gowrap1()\n\t/src/main.go:3 +0x25\ncreated by net/http.(*Server).Serve in goroutine 1\n\t/go/src/net/http/server.go:3102 +0x4db\n",
                frames: &[
                    "panic",
                    "main.(*Tree[...]).Walk.func1.2",
                    "main.Map[...]",
                    "net/http.(*conn).serve",
                    "main.main.gowrap1",
                ],
                created_by: Some("net/http.(*Server).Serve"),
                parent: Some(1),
                elided: false,
            },
            Case {
                name: "go1.19 elision",
                text: "goroutine 9 [running]:\nmain.r(0x1)\n\t/src/r.go:5 +0x1\nmain.r(0x2)\n\t/src/r.go:5 +0x1\n...additional frames elided...\ncreated by main.main\n\t/src/main.go:9 +0x2\n",
                frames: &["main.r", "main.r"],
                created_by: Some("main.main"),
                parent: None,
                elided: true,
            },
            Case {
                name: "go1.21+ elision in the middle",
                text: "goroutine 9 [running]:\nmain.r(0x1)\n\t/src/r.go:5 +0x1\n...57 frames elided...\nmain.r(0x2)\n\t/src/r.go:5 +0x1\nmain.main()\n\t/src/main.go:9 +0x2\n",
                frames: &["main.r", "main.r", "main.main"],
                created_by: None,
                parent: None,
                elided: true,
            },
            Case {
                name: "traceback level 2 locations and gp= header",
                text: "goroutine 1 gp=0xc000002380 m=0 mp=0x5c6a80 [running]:\nruntime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)\n\t/go/src/runtime/proc.go:402 +0xce fp=0xc00006ef08 sp=0xc00006eee8 pc=0x43b44e\nmain.main()\n\t/src/main.go:9 +0x2 fp=0xc00006ef50 sp=0xc00006ef08 pc=0x4a1b2c\n",
                frames: &["runtime.gopark", "main.main"],
                created_by: None,
                parent: None,
                elided: false,
            },
            Case {
                name: "running on another thread",
                text: "goroutine 3 [running]:\n\tgoroutine running on other thread; stack unavailable\ncreated by main.main in goroutine 1\n\t/src/main.go:9 +0x2\n",
                frames: &[],
                created_by: Some("main.main"),
                parent: Some(1),
                elided: false,
            },
            Case {
                name: "ancestor tracebacks are not the goroutine's frames",
                text: "goroutine 8 [chan receive]:\nmain.worker()\n\t/src/w.go:3 +0x1\ncreated by main.spawn in goroutine 7\n\t/src/w.go:9 +0x2\n[originating from goroutine 7]:\nmain.spawn(...)\n\t/src/w.go:9 +0x2\ncreated by main.main\n\t/src/main.go:5 +0x3\n",
                frames: &["main.worker"],
                created_by: Some("main.spawn"),
                parent: Some(7),
                elided: false,
            },
            Case {
                name: "CRLF line ends",
                text: "goroutine 4 [sleep]:\r\ntime.Sleep(0x3b9aca00)\r\n\t/go/src/runtime/time.go:195 +0x135\r\nmain.tick()\r\n\t/src/t.go:7 +0x1\r\n",
                frames: &["time.Sleep", "main.tick"],
                created_by: None,
                parent: None,
                elided: false,
            },
            Case {
                name: "unknown lines are skipped",
                text: "goroutine 4 [syscall]:\nnon-Go function at pc=0x7f00\nsyscall.Syscall(0x0, 0x3, 0xc000, 0x8)\n\t/go/src/syscall/syscall_linux.go:69 +0x25\n",
                frames: &["syscall.Syscall"],
                created_by: None,
                parent: None,
                elided: false,
            },
        ];
        for c in cases {
            let dump =
                parse_goroutines(c.text.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(!dump.truncated, "{}", c.name);
            assert_eq!(dump.goroutines.len(), 1, "{}", c.name);
            let g = &dump.goroutines[0];
            assert_eq!(g.frames, c.frames, "{}", c.name);
            assert_eq!(g.created_by.as_deref(), c.created_by, "{}", c.name);
            assert_eq!(g.created_by_goroutine, c.parent, "{}", c.name);
            assert_eq!(g.elided, c.elided, "{}", c.name);
        }
    }

    #[test]
    fn several_records_and_leading_blank_lines() {
        let text = "\n\ngoroutine 1 [IO wait]:\nmain.main()\n\t/m.go:1 +0x1\n\ngoroutine 2 [chan send (leaked)]:\nmain.f()\n\t/m.go:2 +0x1\ncreated by main.main in goroutine 1\n\t/m.go:3 +0x1\n";
        let dump = parse_goroutines(text.as_bytes()).unwrap();
        assert!(!dump.truncated);
        let ids: Vec<_> = dump
            .goroutines
            .iter()
            .map(|g| (g.id, g.state.as_str(), g.leaked))
            .collect();
        assert_eq!(ids, [(1, "IO wait", false), (2, "chan send", true)]);
    }

    #[test]
    fn fixtures_match_independent_counts() {
        // (fixture, leaked marks expected on senders and selects)
        for (name, text, leaked) in [
            ("go1.19", GO119, false),
            ("go1.27", GO127, false),
            ("go1.27 leaked", GO127_LEAKED, true),
        ] {
            let dump = parse_goroutines(text).unwrap();
            assert!(!dump.truncated, "{name}");
            let headers = text
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"goroutine "))
                .count();
            assert_eq!(dump.goroutines.len(), headers, "{name}");
            let counts = counts(&dump);
            for (function, state, call, n, may_leak) in [
                (
                    "main.blockedSender.func1",
                    "chan send",
                    "main.blockedSender.func1()",
                    20,
                    true,
                ),
                (
                    "main.selectForever",
                    "select (no cases)",
                    "main.selectForever()",
                    5,
                    true,
                ),
                ("main.labeledWorker.func1", "chan receive", "", 7, false),
            ] {
                let key = (function.to_owned(), state.to_owned(), leaked && may_leak);
                assert_eq!(counts.get(&key), Some(&n), "{name}: {key:?} in {counts:?}");
                let (in_headers, in_calls) = text_counts(text, state, call);
                assert_eq!(in_headers, n, "{name}: headers in state {state}");
                if !call.is_empty() {
                    assert_eq!(in_calls, n, "{name}: {call}");
                }
            }
        }
    }

    #[test]
    fn fixture_details_per_go_version() {
        let senders = |d: &Dump| -> Vec<Goroutine> {
            d.goroutines
                .iter()
                .filter(|g| {
                    g.frames.first().map(String::as_str) == Some("main.blockedSender.func1")
                })
                .cloned()
                .collect()
        };
        let workers = |d: &Dump| -> Vec<Goroutine> {
            d.goroutines
                .iter()
                .filter(|g| {
                    g.frames.first().map(String::as_str) == Some("main.labeledWorker.func1")
                })
                .cloned()
                .collect()
        };

        let d19 = parse_goroutines(GO119).unwrap();
        for g in senders(&d19) {
            assert_eq!(
                (g.created_by.as_deref(), g.created_by_goroutine),
                (Some("main.blockedSender"), None)
            );
            assert_eq!(g.wait_minutes, Some(3));
        }
        let main19 = d19.goroutines.iter().find(|g| g.id == 1).unwrap();
        assert_eq!(main19.created_by, None);
        assert_eq!(main19.frames.last().map(String::as_str), Some("main.main"));
        assert_eq!(
            main19.frames.first().map(String::as_str),
            Some("internal/poll.runtime_pollWait")
        );

        let d27 = parse_goroutines(GO127).unwrap();
        for g in senders(&d27) {
            assert_eq!(
                (g.created_by.as_deref(), g.created_by_goroutine),
                (Some("main.blockedSender"), Some(1))
            );
            assert!(!g.leaked);
        }
        // leaky's go.mod says go 1.19, so Go 1.27 keeps tracebacklabels=0: no labels.
        assert!(workers(&d27).iter().all(|g| g.labels.is_empty()));
        assert_eq!(
            workers(&d27)[0].frames,
            [
                "main.labeledWorker.func1",
                "runtime/pprof.Do",
                "main.labeledWorker"
            ]
        );

        // Captured with GODEBUG=tracebacklabels=1 after a goroutineleak profile: leaked
        // goroutines lose their wait time (Go only times _Gwaiting ones).
        let leaked = parse_goroutines(GO127_LEAKED).unwrap();
        for g in senders(&leaked) {
            assert!(g.leaked);
            assert_eq!(g.wait_minutes, None);
        }
        for g in workers(&leaked) {
            assert!(!g.leaked);
            assert_eq!(g.labels, labels(&[("worker", "ingest")]));
            assert_eq!(g.wait_minutes, Some(3));
        }
    }

    #[test]
    fn crash_dump_with_gp_fields() {
        // Records picked verbatim from a SIGQUIT dump of leaky under Go 1.27 with
        // GOTRACEBACK=system, the level at which Go prints `gp= m= mp=` and fp/sp/pc; a
        // debug=2 dump of the same process under that setting has none of them.
        let text = include_bytes!("../../tests/fixtures/text/goroutine-sigquit-go1.27-excerpt.txt");
        let dump = parse_goroutines(text).unwrap();
        assert!(!dump.truncated);
        let states: Vec<_> = dump
            .goroutines
            .iter()
            .map(|g| (g.id, g.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                (0, "idle"),
                (1, "IO wait"),
                (2, "force gc (idle)"),
                (3, "GC sweep wait"),
                (4, "GC scavenge wait"),
                (18, "finalizer wait"),
                (19, "cleanup wait"),
                (20, "GC worker (idle)"),
                (22, "chan send"),
                (42, "select (no cases)"),
                (47, "chan receive"),
            ]
        );
        let sender = &dump.goroutines[8];
        assert_eq!(
            sender.frames,
            [
                "runtime.gopark",
                "runtime.chansend",
                "runtime.chansend1",
                "main.blockedSender.func1",
                "runtime.goexit"
            ]
        );
        let names: Vec<&str> = sender.frames.iter().map(String::as_str).collect();
        assert_eq!(blocking_function(&names), "main.blockedSender.func1");
        assert_eq!(sender.created_by_goroutine, Some(1));
    }

    #[test]
    fn cut_anywhere_keeps_complete_records() {
        for text in [GO119, GO127_LEAKED] {
            let full = parse_goroutines(text).unwrap().goroutines;
            // Every offset near the ends and around every line break; a stride between.
            let interesting = |cut: usize| {
                cut < 600
                    || cut + 600 > text.len()
                    || cut % 7 == 0
                    || text[cut.saturating_sub(1)..(cut + 1).min(text.len())].contains(&b'\n')
            };
            for cut in (0..text.len()).filter(|&c| interesting(c)) {
                let prefix = &text[..cut];
                let Ok(dump) = parse_goroutines(prefix) else {
                    // Only a prefix too short to show it is a dump may be refused.
                    assert!(
                        !prefix.contains(&b'\n') && prefix.len() < 10,
                        "cut at {cut}"
                    );
                    continue;
                };
                let n = dump.goroutines.len();
                assert!(n <= full.len(), "cut at {cut}");
                if n > 0 {
                    assert_eq!(dump.goroutines[..n - 1], full[..n - 1], "cut at {cut}");
                    assert_eq!(dump.goroutines[n - 1].id, full[n - 1].id, "cut at {cut}");
                }
                if !prefix.ends_with(b"\n") {
                    assert!(dump.truncated, "cut at {cut} mid-line");
                }
                // At a record boundary nothing is lost and nothing is flagged.
                if text[cut..].starts_with(b"\ngoroutine ") && prefix.ends_with(b"\n") {
                    assert!(!dump.truncated, "cut at {cut}");
                    assert_eq!(dump.goroutines, full[..n], "cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn cut_records_are_dropped() {
        let whole = "goroutine 1 [IO wait]:\nmain.main()\n\t/m.go:1 +0x1\n\n";
        for (tail, kept) in [
            ("goroutine 2 [chan send]:\n", 1),
            ("goroutine 2 [chan send]:\nmain.f()\n", 1),
            (
                "goroutine 2 [chan send]:\nmain.f()\n\t/m.go:2 +0x1\ncreated by main.main\n",
                1,
            ),
            ("goroutine 2 [chan se", 1),
            ("goroutine 2 [chan send]:\nmain.f()\n\t/m.go:2", 1),
        ] {
            let dump = parse_goroutines(format!("{whole}{tail}").as_bytes()).unwrap();
            assert!(dump.truncated, "{tail:?}");
            assert_eq!(dump.goroutines.len(), kept, "{tail:?}");
        }
        // A dump of exactly Go's buffer size was cut even if it ends on a line.
        let dump = parse_with_limit(whole.as_bytes(), whole.len()).unwrap();
        assert!(dump.truncated);
        assert_eq!(dump.goroutines.len(), 1);
        assert!(
            !parse_with_limit(whole.as_bytes(), whole.len() + 1)
                .unwrap()
                .truncated
        );
    }

    #[test]
    fn non_dumps_are_refused() {
        for text in [
            &b""[..],
            b"\n\n  \n",
            b"<!DOCTYPE html>\n<html><body>goroutine 1 [running]:</body></html>\n",
            b"404 page not found\n",
            b"Unknown profile\n",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00",
            b"goroutine profile: total 35\n20 @ 0x48c1ca 0x418c9c\n",
        ] {
            assert!(
                matches!(parse_goroutines(text), Err(DecodeError::NotAProfile(_))),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::synth::Rng::new(3);
        let mut next = move || rng.next_u64();
        // Bytes biased towards the dump's own punctuation to reach deep branches.
        let alphabet = b"goroutine 0123456789[](){}:,\"\\\n\t.*xu elided...created by in";
        for round in 0..2000 {
            let len = (next() % 400) as usize;
            let mut bytes = if round % 2 == 0 {
                b"goroutine 1 [running]:\n".to_vec()
            } else {
                Vec::new()
            };
            for _ in 0..len {
                let r = next();
                bytes.push(if r % 3 == 0 {
                    (r >> 8) as u8
                } else {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                });
            }
            let _ = parse_goroutines(&bytes);
        }
        // Invalid UTF-8 in names and labels comes out replaced, not rejected.
        let dump =
            parse_goroutines(b"goroutine 1 [chan \xff] {\"k\\xff\": v}:\nmain.\xfe()\n\t/m.go:1\n")
                .unwrap();
        let g = &dump.goroutines[0];
        assert_eq!(g.state, "chan \u{fffd}");
        assert_eq!(g.frames, ["main.\u{fffd}"]);
        assert_eq!(g.labels, labels(&[("k\u{fffd}", "v")]));
    }

    #[test]
    fn frames_are_capped() {
        let mut text = String::from("goroutine 1 [running]:\n");
        for _ in 0..MAX_FRAMES + 10 {
            text.push_str("main.r()\n\t/r.go:1 +0x1\n");
        }
        let dump = parse_goroutines(text.as_bytes()).unwrap();
        assert_eq!(dump.goroutines[0].frames.len(), MAX_FRAMES);
        assert!(dump.goroutines[0].elided);
    }
}
