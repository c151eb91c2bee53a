//! Heap profiles: per-function in-use and allocated bytes and objects.
//!
//! Values are taken as the Go runtime wrote them (already scaled up from the sampling
//! rate). `alloc_*` grow for the life of the process, so they are exposed as counters;
//! `inuse_*` are gauges.

use super::functions::FunctionAccumulator;
use super::{Dropped, Family, FunctionTable, Kind, Limits, OTHER, by_function, limit};
use crate::decode::profile::DecodeLimits;
use crate::decode::stream::Decoder;
use crate::decode::{DecodeError, Profile};

/// Why a heap profile read off the wire cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The bytes are not a valid profile.
    #[error("{0}")]
    Decode(DecodeError),
    /// A valid profile, but not a usable heap profile.
    #[error("{0}")]
    NotHeap(NotAHeapProfile),
}

/// The heap sample types, in the order a [`HeapSummary`] holds them.
pub const HEAP_TYPES: [&str; 4] = [
    "inuse_space",
    "inuse_objects",
    "alloc_space",
    "alloc_objects",
];

/// Per-function values of one heap profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapSummary {
    /// Rows hold `HEAP_TYPES` in order.
    pub table: FunctionTable,
}

/// Why a profile is not a usable heap profile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotAHeapProfile {
    /// A heap sample type is missing.
    #[error("not a heap profile: it has no {0:?} sample type")]
    MissingType(&'static str),
    /// A value would be served negative. The Go runtime never writes negative heap
    /// values (only `-base` differences have them), and a negative `_total` counter
    /// would break `rate()`, so such a profile is refused rather than served.
    #[error("invalid heap profile: negative {kind} ({value}) for {function}")]
    Negative {
        /// The sample type.
        kind: &'static str,
        /// The function whose flat or cum value is negative, or `(total)`.
        function: String,
        /// The value.
        value: i64,
    },
}

impl HeapSummary {
    /// Aggregates a heap profile by function.
    pub fn from_profile(profile: &Profile) -> Result<Self, NotAHeapProfile> {
        let mut idx = [0usize; 4];
        for (slot, name) in idx.iter_mut().zip(HEAP_TYPES) {
            *slot = profile
                .sample_index(name)
                .ok_or(NotAHeapProfile::MissingType(name))?;
        }
        Self::from_table(by_function(profile, &idx))
    }

    /// Aggregates a heap profile by function as its samples are read off the wire,
    /// without materialising them.
    pub fn from_stream(d: &Decoder<'_>, limits: DecodeLimits) -> Result<Self, StreamError> {
        let mut idx = [0usize; 4];
        for (slot, name) in idx.iter_mut().zip(HEAP_TYPES) {
            *slot = d
                .sample_index(name)
                .ok_or(StreamError::NotHeap(NotAHeapProfile::MissingType(name)))?;
        }
        let mut acc = FunctionAccumulator::new(d.functions.len(), &idx);
        d.samples(limits, |s| acc.add(s.values, s.frames.iter().copied()))
            .map_err(StreamError::Decode)?;
        Self::from_table(acc.finish(&d.functions)).map_err(StreamError::NotHeap)
    }

    fn from_table(table: FunctionTable) -> Result<Self, NotAHeapProfile> {
        let negative = |kind: usize, function: &str, value: i64| NotAHeapProfile::Negative {
            kind: HEAP_TYPES[kind],
            function: function.to_owned(),
            value,
        };
        for (k, &t) in table.totals.iter().enumerate() {
            if t < 0 {
                return Err(negative(k, "(total)", t));
            }
        }
        for r in &table.rows {
            for (k, (&flat, &cum)) in r.flat.iter().zip(&r.cum).enumerate() {
                if flat.min(cum) < 0 {
                    return Err(negative(k, &r.name, flat.min(cum)));
                }
            }
        }
        Ok(Self { table })
    }

    /// The `n` functions holding the most in-use bytes (flat), largest first.
    pub fn top_inuse(&self, n: usize) -> Vec<(&str, i64, i64)> {
        let mut rows: Vec<_> = self
            .table
            .present_in(0)
            .map(|r| (r.name.as_str(), r.flat[0], r.cum[0]))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)));
        rows.truncate(n);
        rows
    }

    /// The heap metric families, each limited to `limits.top` functions.
    ///
    /// Flat metrics fold the remainder into `function="(other)"`, so a family's sum is
    /// the profile total. Cumulative values overlap between functions, so a sum of them
    /// means nothing; their remainder is dropped, not folded, and counted the same way.
    pub fn families(&self, limits: &Limits) -> (Vec<Family>, Dropped) {
        struct Def {
            name: &'static str,
            kind: Kind,
            help: &'static str,
            k: usize,
            cum: bool,
        }
        const DEFS: [Def; 8] = [
            Def {
                name: "pprof_heap_inuse_bytes",
                kind: Kind::Gauge,
                k: 0,
                cum: false,
                help: "Heap bytes in use, allocated directly by this function (flat), as of the last GC.",
            },
            Def {
                name: "pprof_heap_inuse_objects",
                kind: Kind::Gauge,
                k: 1,
                cum: false,
                help: "Heap objects in use, allocated directly by this function (flat), as of the last GC.",
            },
            Def {
                name: "pprof_heap_alloc_bytes_total",
                kind: Kind::Counter,
                k: 2,
                cum: false,
                help: "Bytes allocated by this function (flat) since the target started.",
            },
            Def {
                name: "pprof_heap_alloc_objects_total",
                kind: Kind::Counter,
                k: 3,
                cum: false,
                help: "Objects allocated by this function (flat) since the target started.",
            },
            Def {
                name: "pprof_heap_inuse_cum_bytes",
                kind: Kind::Gauge,
                k: 0,
                cum: true,
                help: "Heap bytes in use, allocated by this function or its callees (cum).",
            },
            Def {
                name: "pprof_heap_inuse_cum_objects",
                kind: Kind::Gauge,
                k: 1,
                cum: true,
                help: "Heap objects in use, allocated by this function or its callees (cum).",
            },
            Def {
                name: "pprof_heap_alloc_cum_bytes_total",
                kind: Kind::Counter,
                k: 2,
                cum: true,
                help: "Bytes allocated by this function or its callees (cum) since the target started.",
            },
            Def {
                name: "pprof_heap_alloc_cum_objects_total",
                kind: Kind::Counter,
                k: 3,
                cum: true,
                help: "Objects allocated by this function or its callees (cum) since the target started.",
            },
        ];
        const TOTALS: [(&str, Kind, &str); 4] = [
            (
                "pprof_profile_heap_inuse_bytes",
                Kind::Gauge,
                "Heap bytes in use in the last heap profile, all functions.",
            ),
            (
                "pprof_profile_heap_inuse_objects",
                Kind::Gauge,
                "Heap objects in use in the last heap profile, all functions.",
            ),
            (
                "pprof_profile_heap_alloc_bytes_total",
                Kind::Counter,
                "Bytes allocated since the target started, all functions.",
            ),
            (
                "pprof_profile_heap_alloc_objects_total",
                Kind::Counter,
                "Objects allocated since the target started, all functions.",
            ),
        ];

        let mut families = Vec::with_capacity(DEFS.len() + TOTALS.len());
        let mut dropped = Vec::with_capacity(DEFS.len());
        for def in &DEFS {
            let items: Vec<(&str, i64)> = self
                .table
                .present_in(def.k)
                .map(|r| {
                    (
                        r.name.as_str(),
                        if def.cum { r.cum[def.k] } else { r.flat[def.k] },
                    )
                })
                .filter(|(_, v)| def.cum || *v != 0)
                .collect();
            let limited = limit::top_n(items, limits.top);
            let mut family = Family::new(def.name, def.kind, def.help);
            for (name, v) in &limited.kept {
                family.push(vec![("function", (*name).to_owned())], *v as f64);
            }
            if let (Some(other), false) = (limited.other, def.cum) {
                family.push(vec![("function", OTHER.to_owned())], other as f64);
            }
            dropped.push((def.name, limited.dropped));
            families.push(family);
        }
        for (k, (name, kind, help)) in TOTALS.iter().enumerate() {
            let mut family = Family::new(name, *kind, help);
            family.push(Vec::new(), self.table.totals[k] as f64);
            families.push(family);
        }
        (families, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::profile::tests::Builder;

    fn heap_builder() -> Builder {
        Builder::new(&[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ])
    }

    fn value(fams: &[Family], name: &str, function: &str) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == name)?
            .series
            .iter()
            .find(|s| s.labels.first().map_or("", |l| l.1.as_str()) == function)
            .map(|s| s.value)
    }

    #[test]
    fn requires_heap_sample_types() {
        let b = Builder::new(&[("goroutine", "count")]);
        assert_eq!(
            HeapSummary::from_profile(&b.profile()).unwrap_err(),
            NotAHeapProfile::MissingType("inuse_space")
        );
    }

    #[test]
    fn refuses_values_that_would_be_served_negative() {
        let mut b = heap_builder();
        let main = b.loc(&["main.main"]);
        let f = b.loc(&["main.f"]);
        let g = b.loc(&["main.g"]);
        b.sample(&[f, main], &[1, 100, 1, 100], &[]);
        // A negative sample that leaves every flat, cum and total non-negative is
        // harmless: nothing negative is served.
        b.sample(&[f, main], &[0, 0, 0, -40], &[]);
        assert!(HeapSummary::from_profile(&b.profile()).is_ok());
        b.sample(&[g, main], &[0, 0, 0, -5], &[]);
        let err = HeapSummary::from_profile(&b.profile()).unwrap_err();
        assert_eq!(
            err,
            NotAHeapProfile::Negative {
                kind: "inuse_space",
                function: "main.g".into(),
                value: -5
            }
        );
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn folds_flat_and_drops_cum_beyond_the_limit() {
        let mut b = heap_builder();
        let main = b.loc(&["main.main"]);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let l = b.loc(&[name]);
            let v = (i as i64 + 1) * 10;
            b.sample(&[l, main], &[1, v, 1, v], &[]);
        }
        let s = HeapSummary::from_profile(&b.profile()).unwrap();
        let (fams, dropped) = s.families(&Limits {
            top: 2,
            stack_text: 100,
        });
        assert_eq!(value(&fams, "pprof_heap_inuse_bytes", "d"), Some(40.0));
        assert_eq!(value(&fams, "pprof_heap_inuse_bytes", "c"), Some(30.0));
        assert_eq!(value(&fams, "pprof_heap_inuse_bytes", OTHER), Some(30.0));
        assert_eq!(value(&fams, "pprof_heap_inuse_bytes", "a"), None);
        // cum: main.main (100) and d (40) kept, nothing folded into (other).
        assert_eq!(
            value(&fams, "pprof_heap_inuse_cum_bytes", "main.main"),
            Some(100.0)
        );
        assert_eq!(value(&fams, "pprof_heap_inuse_cum_bytes", OTHER), None);
        let total: f64 = fams
            .iter()
            .find(|f| f.name == "pprof_heap_inuse_bytes")
            .unwrap()
            .series
            .iter()
            .map(|s| s.value)
            .sum();
        assert_eq!(total, 100.0);
        assert_eq!(
            value(&fams, "pprof_profile_heap_inuse_bytes", ""),
            Some(100.0)
        );
        assert!(dropped.contains(&("pprof_heap_inuse_bytes", 2)));
        assert!(dropped.contains(&("pprof_heap_inuse_cum_bytes", 3)));
    }
}
