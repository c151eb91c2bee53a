//! Decode stage: bytes from a target into typed values.
//!
//! Everything here is pure: it takes `&[u8]` and returns a value or a [`DecodeError`],
//! with no sockets, clocks or files, so it can be unit-tested on captured payloads and
//! fuzzed. Every read is bounded: decompression stops at a caller-given byte limit.

pub mod goroutine_text;
pub mod memstats;
pub mod profile;
pub mod stream;

use std::io::BufRead;

use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};
use thiserror::Error;

pub use profile::{Profile, ValueType, decode_profile};

/// Why a payload could not be turned into a profile.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The gzip stream was cut short or corrupt.
    #[error("gzip: {0}")]
    Gzip(String),
    /// Inflating went past the configured limit (a gzip bomb, or a limit set too low).
    #[error("decompressed size exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was hit, in bytes.
        limit: u64,
    },
    /// The bytes are not a protobuf profile.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// The protobuf decoded but its cross-references are inconsistent.
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// The payload looks like something else entirely (an HTML page, an error text).
    #[error("not a profile: {0}")]
    NotAProfile(String),
}

/// True when `bytes` starts with the gzip magic number. Go's pprof handlers send gzip
/// without a `Content-Encoding` header, so the magic bytes are the only reliable signal.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Inflates `bytes` if they are gzip, refusing to produce more than `limit` bytes;
/// returns plain bytes unchanged (within the same limit).
pub fn gunzip_bounded(bytes: &[u8], limit: u64) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    if !is_gzip(bytes) {
        if bytes.len() as u64 > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut input = bytes;
    inflate(&mut input, limit, size_guess(bytes.len() as u64)).map(std::borrow::Cow::Owned)
}

/// The inflated size to reserve for a gzip profile of `compressed` bytes: profiles
/// compress about 3-5x, and reserving is free until pages are written.
pub fn size_guess(compressed: u64) -> u64 {
    compressed.saturating_mul(4)
}

/// The least room the inflater is given to write into at a time: what [`inflate`]
/// reserves at least, and the chunk [`inflate_into_chunks`] takes of its own.
const ROOM: usize = 64 << 10;

/// Inflates the gzip stream (one or more members) that `input` holds, refusing to
/// produce more than `limit` bytes; `guess` is the expected size, reserved up front as
/// far as the limit allows. The inflater writes straight into the vector's spare room,
/// which is neither zeroed first nor copied after. A read error of `input` is reported
/// as a gzip error, as the stream cannot be finished without those bytes.
pub fn inflate(input: &mut impl BufRead, limit: u64, guess: u64) -> Result<Vec<u8>, DecodeError> {
    // One byte past the limit tells "exactly at the limit" from "over it".
    let cap = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(guess.max(ROOM as u64).min(cap) as usize);
    inflate_into(input, limit, &mut out, |out| {
        if out.len() as u64 >= cap {
            return Err(DecodeError::TooLarge { limit });
        }
        let room = out.len().max(ROOM) as u64;
        out.reserve_exact(room.min(cap - out.len() as u64) as usize);
        Ok(0)
    })?;
    Ok(out)
}

/// [`inflate`], writing the output into chunks of initialised memory: `lend` gives the
/// next chunk to fill (its bytes are overwritten from the start; one of no bytes makes
/// the inflater take a chunk of `ROOM` bytes of its own), and `give_back` takes each
/// chunk as it is filled, the last one cut to what was written and only if something
/// was. No more
/// than `limit` bytes are written in all. Chunks split off one `BytesMut` in order and
/// given back in order join without a copy ([`BytesMut::unsplit`]).
pub fn inflate_into_chunks(
    input: &mut impl BufRead,
    limit: u64,
    mut lend: impl FnMut() -> BytesMut,
    mut give_back: impl FnMut(BytesMut),
) -> Result<(), DecodeError> {
    let mut next = move || {
        let chunk = lend();
        if chunk.is_empty() {
            BytesMut::zeroed(ROOM)
        } else {
            chunk
        }
    };
    let mut out = Chunk {
        buf: next(),
        filled: 0,
    };
    inflate_into(input, limit, &mut out, |out| {
        let sent = out.filled;
        // Given back before the next is lent: the lender may wait for it.
        give_back(std::mem::take(&mut out.buf));
        out.buf = next();
        out.filled = 0;
        Ok(sent as u64)
    })?;
    if out.filled > 0 {
        out.buf.truncate(out.filled);
        give_back(out.buf);
    }
    Ok(())
}

/// Where [`inflate_into`] writes: a vector's spare room, or a [`Chunk`].
trait Output {
    /// Bytes written so far.
    fn written(&self) -> usize;
    /// Whether there is no room left.
    fn is_full(&self) -> bool;
    /// Inflates what it can of `input` into the room left.
    fn inflate(&mut self, z: &mut Decompress, input: &[u8]) -> Result<Status, DecodeError>;
}

fn gzip_error(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Gzip(e.to_string())
}

impl Output for Vec<u8> {
    fn written(&self) -> usize {
        self.len()
    }
    fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }
    fn inflate(&mut self, z: &mut Decompress, input: &[u8]) -> Result<Status, DecodeError> {
        z.decompress_vec(input, self, FlushDecompress::None)
            .map_err(gzip_error)
    }
}

/// A chunk of initialised memory and how much of it the inflater has written.
struct Chunk {
    buf: BytesMut,
    filled: usize,
}

impl Output for Chunk {
    fn written(&self) -> usize {
        self.filled
    }
    fn is_full(&self) -> bool {
        self.filled == self.buf.len()
    }
    fn inflate(&mut self, z: &mut Decompress, input: &[u8]) -> Result<Status, DecodeError> {
        let before = z.total_out();
        let status = z
            .decompress(input, &mut self.buf[self.filled..], FlushDecompress::None)
            .map_err(gzip_error)?;
        self.filled += (z.total_out() - before) as usize;
        Ok(status)
    }
}

/// The inflate loop: output goes to `out`, and when `out` is full, `full` makes room
/// in it and returns how many bytes it took out (handed on elsewhere), so that the
/// limit counts every byte produced.
fn inflate_into<O: Output>(
    input: &mut impl BufRead,
    limit: u64,
    out: &mut O,
    mut full: impl FnMut(&mut O) -> Result<u64, DecodeError>,
) -> Result<(), DecodeError> {
    let mut z = Decompress::new_gzip(15);
    let mut in_member = true;
    let mut handed_on: u64 = 0;
    loop {
        let buf = input.fill_buf().map_err(gzip_error)?;
        if buf.is_empty() {
            if in_member {
                return Err(DecodeError::Gzip("unexpected end of file".into()));
            }
            return Ok(());
        }
        if !in_member {
            // Another member follows: it brings its own header.
            z = Decompress::new_gzip(15);
            in_member = true;
        }
        if out.is_full() {
            handed_on += full(out)?;
        }
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let status = out.inflate(&mut z, buf)?;
        let consumed = (z.total_in() - in_before) as usize;
        input.consume(consumed);
        if handed_on + out.written() as u64 > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        match status {
            Status::StreamEnd => in_member = false,
            _ if consumed == 0 && z.total_out() == out_before && !out.is_full() => {
                // Input and room were both there and nothing moved.
                return Err(DecodeError::Gzip("corrupt deflate stream".into()));
            }
            _ => {}
        }
    }
}

/// A short, printable description of what a non-profile payload starts with, for
/// error messages: an HTML page or a Go error text is recognisable by a human.
pub fn describe_payload(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(64)];
    let printable = head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if printable && !head.is_empty() {
        let text: String = String::from_utf8_lossy(head)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        format!("text starting {text:?}")
    } else {
        format!(
            "{} bytes starting {:02x?}",
            bytes.len(),
            &head[..head.len().min(8)]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn detects_gzip_by_magic() {
        assert!(is_gzip(&gzip(b"x")));
        assert!(!is_gzip(b"\x0a\x04"));
        assert!(!is_gzip(b"\x1f"));
        assert!(!is_gzip(b""));
    }

    #[test]
    fn inflates_within_limit() {
        let data = vec![7u8; 10_000];
        let z = gzip(&data);
        let out = gunzip_bounded(&z, 10_000).unwrap();
        assert_eq!(&*out, &data[..]);
    }

    #[test]
    fn refuses_output_past_limit() {
        let data = vec![0u8; 1 << 20];
        let err = gunzip_bounded(&gzip(&data), (1 << 20) - 1).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                limit: (1 << 20) - 1
            }
        );
    }

    #[test]
    fn plain_bytes_pass_through_but_are_bounded() {
        assert_eq!(&*gunzip_bounded(b"abc", 3).unwrap(), b"abc");
        assert!(matches!(
            gunzip_bounded(b"abcd", 3),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let full = gzip(&vec![1u8; 50_000]);
        let cut = &full[..full.len() / 2];
        assert!(matches!(
            gunzip_bounded(cut, 1 << 30),
            Err(DecodeError::Gzip(_))
        ));
    }

    #[test]
    fn output_exactly_at_the_limit_is_accepted() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let z = gzip(&data);
        assert_eq!(&*gunzip_bounded(&z, data.len() as u64).unwrap(), &data[..]);
        assert_eq!(
            gunzip_bounded(&z, data.len() as u64 - 1).unwrap_err(),
            DecodeError::TooLarge {
                limit: data.len() as u64 - 1
            }
        );
    }

    #[test]
    fn members_are_inflated_in_turn() {
        let mut z = gzip(b"first member, ");
        z.extend(gzip(b"second member"));
        assert_eq!(
            &*gunzip_bounded(&z, 1 << 20).unwrap(),
            b"first member, second member"
        );
    }

    #[test]
    fn garbage_after_a_member_is_an_error() {
        let mut z = gzip(b"payload");
        z.extend_from_slice(b"trailing junk");
        assert!(matches!(
            gunzip_bounded(&z, 1 << 20),
            Err(DecodeError::Gzip(_))
        ));
    }

    #[test]
    fn a_corrupt_stream_is_an_error() {
        let mut z = gzip(&vec![3u8; 50_000]);
        // Past the ten-byte header: the deflate data itself.
        for b in &mut z[12..40] {
            *b ^= 0x5a;
        }
        assert!(matches!(
            gunzip_bounded(&z, 1 << 30),
            Err(DecodeError::Gzip(_))
        ));
    }

    #[test]
    fn a_read_error_of_the_source_is_a_gzip_error() {
        struct Failing;
        impl std::io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut r = std::io::BufReader::new(Failing);
        assert_eq!(
            inflate(&mut r, 1 << 20, 0).unwrap_err(),
            DecodeError::Gzip("disk on fire".into())
        );
    }

    #[test]
    fn inflating_into_chunks_gives_what_inflating_whole_gives() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let one = gzip(&data);
        let mut two = gzip(b"first member, ");
        two.extend(gzip(&data));
        let mut corrupt = one.clone();
        for b in &mut corrupt[12..40] {
            *b ^= 0x5a;
        }
        let mut junk = one.clone();
        junk.extend_from_slice(b"trailing junk");
        let cases: [(&[u8], u64); 7] = [
            (&one, 1 << 30),
            (&one, data.len() as u64),
            (&one, data.len() as u64 - 1),
            (&two, 1 << 30),
            (&one[..one.len() / 2], 1 << 30),
            (&corrupt, 1 << 30),
            (&junk, 1 << 30),
        ];
        for (z, limit) in cases {
            let whole = inflate(&mut &z[..], limit, 0);
            // Chunks split off one buffer of `room` bytes, then new ones; or none lent,
            // and the inflater makes its own.
            for (piece, room) in [
                (1, 1 << 20),
                (4096, 1 << 20),
                (64 << 10, 1 << 20),
                (1 << 20, 1 << 20),
                (4096, 100_000),
                (0, 0),
            ] {
                let mut buffer = BytesMut::zeroed(room);
                // How long each chunk lent is, as the inflater takes it.
                let mut lent: Vec<usize> = Vec::new();
                let mut back: Vec<BytesMut> = Vec::new();
                let done = inflate_into_chunks(
                    &mut &z[..],
                    limit,
                    || {
                        let chunk = if buffer.is_empty() {
                            BytesMut::zeroed(piece)
                        } else {
                            buffer.split_to(piece.min(buffer.len()))
                        };
                        lent.push(if chunk.is_empty() { ROOM } else { chunk.len() });
                        chunk
                    },
                    |full| back.push(full),
                );
                let what = format!("piece {piece}, room {room}");
                // Every chunk comes back filled, in the order lent, but the last one,
                // which comes back only if something was written to it.
                assert!(back.len() <= lent.len(), "{what}");
                if let Some((last, filled)) = back.split_last() {
                    for (i, chunk) in filled.iter().enumerate() {
                        assert_eq!(chunk.len(), lent[i], "{what}");
                    }
                    let i = filled.len();
                    assert!(!last.is_empty() && last.len() <= lent[i], "{what}");
                }
                // Joined in order, the chunks of the buffer need no copy.
                let (mut joined, mut copies) = (BytesMut::new(), 0);
                for chunk in back {
                    if joined.is_empty() {
                        joined = chunk;
                    } else if let Err(chunk) = joined.try_unsplit(chunk) {
                        copies += 1;
                        joined.extend_from_slice(&chunk);
                    }
                }
                assert!(joined.len() as u64 <= limit, "{what}");
                match (&whole, done) {
                    (Ok(w), Ok(())) => {
                        assert_eq!(&joined[..], &w[..], "{what}");
                        if w.len() <= room {
                            assert_eq!(copies, 0, "{what}");
                        }
                    }
                    (Err(a), Err(b)) => assert_eq!(a, &b, "{what}"),
                    (w, d) => panic!("whole {w:?} vs in chunks {d:?}, {what}"),
                }
            }
        }
    }

    #[test]
    fn describes_text_and_binary_payloads() {
        assert_eq!(
            describe_payload(b"<html>\n<body>hi"),
            "text starting \"<html> <body>hi\""
        );
        assert!(describe_payload(&[0, 1, 2]).starts_with("3 bytes starting [00, 01, 02]"));
    }
}
