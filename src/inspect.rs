//! `pprof-exporter inspect`: the exporter's per-function aggregation for a profile file
//! or URL, printed as a table (like `go tool pprof -top`) or as JSON.
//!
//! `--base` subtracts a base profile function by function, as `go tool pprof -base`
//! does: flat and cum are both linear in the sample values, so the difference of the
//! aggregates equals the aggregate of the difference.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;

use serde::Serialize;
use thiserror::Error;

use crate::aggregate::by_function;
use crate::config::{Format, InspectArgs};
use crate::decode::{self, DecodeError, Profile, profile::DecodeLimits};
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

/// The JSON report.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// The sample type shown.
    pub sample_type: String,
    /// Its unit.
    pub unit: String,
    /// Sum of all sample values (minus the base's, with `--base`).
    pub total: i64,
    /// Every function, largest |flat| first, then largest |cum|.
    pub functions: Vec<FunctionEntry>,
}

/// One function of the report.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FunctionEntry {
    /// The function name.
    pub function: String,
    /// Flat value.
    pub flat: i64,
    /// Cumulative value.
    pub cum: i64,
}

fn load(source: &str, args: &InspectArgs) -> Result<Profile, InspectError> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
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
        rt.block_on(fetcher.get(&url))
            .map_err(|error| InspectError::Fetch {
                url: source.to_owned(),
                error,
            })?
            .to_vec()
    } else {
        let io = |e: std::io::Error| InspectError::Io {
            path: source.to_owned(),
            error: e.to_string(),
        };
        let file = std::fs::File::open(source).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(args.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > args.max_bytes {
            return Err(InspectError::Io {
                path: source.to_owned(),
                error: format!("larger than --max-bytes ({} bytes)", args.max_bytes),
            });
        }
        bytes
    };
    let err = |error| InspectError::Decode {
        source_name: source.to_owned(),
        error,
    };
    let raw = decode::gunzip_bounded(&bytes, args.max_decompressed_bytes).map_err(err)?;
    decode::decode_profile(
        &raw,
        DecodeLimits {
            max_frames: u64::MAX,
        },
    )
    .map_err(err)
}

/// Builds the report for `args`.
pub fn report(args: &InspectArgs) -> Result<Report, InspectError> {
    let profile = load(&args.source, args)?;
    let index = match &args.sample_index {
        Some(name) => profile.sample_index(name).ok_or_else(|| {
            InspectError::SampleType(format!(
                "sample type {name:?} not in profile (it has: {})",
                profile
                    .sample_types
                    .iter()
                    .map(|t| t.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => profile
            .default_index()
            .ok_or_else(|| InspectError::SampleType("profile has no sample types".into()))?,
    };
    let vt = profile.sample_types[index].clone();
    let table = by_function(&profile, &[index]);

    // name -> (flat, cum)
    let mut rows: HashMap<String, (i64, i64)> = table
        .present_in(0)
        .map(|r| (r.name.clone(), (r.flat[0], r.cum[0])))
        .collect();
    let mut total = table.totals[0];
    if let Some(base_src) = &args.base {
        let base = load(base_src, args)?;
        let bi = base.sample_index(&vt.kind).ok_or_else(|| {
            InspectError::SampleType(format!("base profile has no sample type {:?}", vt.kind))
        })?;
        let bt = by_function(&base, &[bi]);
        for r in bt.present_in(0) {
            let e = rows.entry(r.name.clone()).or_default();
            e.0 -= r.flat[0];
            e.1 -= r.cum[0];
        }
        total -= bt.totals[0];
        // A function whose samples cancel out exactly has nothing to show, and pprof,
        // which merges the base into the profile first, does not list it either.
        rows.retain(|_, (f, c)| *f != 0 || *c != 0);
    }
    let mut functions: Vec<FunctionEntry> = rows
        .into_iter()
        .map(|(function, (flat, cum))| FunctionEntry {
            function,
            flat,
            cum,
        })
        .collect();
    functions.sort_by(|a, b| {
        b.flat
            .unsigned_abs()
            .cmp(&a.flat.unsigned_abs())
            .then(b.cum.unsigned_abs().cmp(&a.cum.unsigned_abs()))
            .then_with(|| a.function.cmp(&b.function))
    });
    Ok(Report {
        sample_type: vt.kind,
        unit: vt.unit,
        total,
        functions,
    })
}

fn pct(v: i64, total: i64) -> String {
    if total == 0 {
        return "-".into();
    }
    format!("{:.2}%", v as f64 * 100.0 / total as f64)
}

/// Renders a report in the requested format.
pub fn render(report: &Report, format: Format, top: Option<usize>) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string(report).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Table => {
            let mut out = String::new();
            let _ = writeln!(out, "Type: {} ({})", report.sample_type, report.unit);
            let _ = writeln!(out, "Total: {} {}", report.total, report.unit);
            let _ = writeln!(
                out,
                "{:>14} {:>7} {:>7} {:>14} {:>7}  function",
                "flat", "flat%", "sum%", "cum", "cum%"
            );
            let mut sum = 0i64;
            let shown = top.unwrap_or(usize::MAX);
            for f in report.functions.iter().take(shown) {
                sum += f.flat;
                let _ = writeln!(
                    out,
                    "{:>14} {:>7} {:>7} {:>14} {:>7}  {}",
                    f.flat,
                    pct(f.flat, report.total),
                    pct(sum, report.total),
                    f.cum,
                    pct(f.cum, report.total),
                    f.function
                );
            }
            if report.functions.len() > shown {
                let _ = writeln!(
                    out,
                    "({} more functions not shown)",
                    report.functions.len() - shown
                );
            }
            out
        }
    }
}
