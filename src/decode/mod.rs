//! Decode stage: bytes from a target into typed values.
//!
//! Everything here is pure: it takes `&[u8]` and returns a value or a [`DecodeError`],
//! with no sockets, clocks or files, so it can be unit-tested on captured payloads and
//! fuzzed. Every read is bounded: decompression stops at a caller-given byte limit.

pub mod goroutine_text;
pub mod memstats;
pub mod profile;
pub mod stream;

use std::io::Read;

use flate2::read::MultiGzDecoder;
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
    // Guess the output size from the input, as profiles compress about 3-5x, but never
    // reserve more than the limit up front.
    let guess = (bytes.len() as u64).saturating_mul(4).min(limit) as usize;
    let mut out = Vec::with_capacity(guess);
    let mut reader = MultiGzDecoder::new(bytes).take(limit.saturating_add(1));
    reader
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(std::borrow::Cow::Owned(out))
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
    fn describes_text_and_binary_payloads() {
        assert_eq!(
            describe_payload(b"<html>\n<body>hi"),
            "text starting \"<html> <body>hi\""
        );
        assert!(describe_payload(&[0, 1, 2]).starts_with("3 bytes starting [00, 01, 02]"));
    }
}
