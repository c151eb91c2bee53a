//! `pprof_go_memstats_*` families from a parsed MemStats block.
//!
//! Values are converted to base units (bytes, seconds). Cumulative MemStats fields
//! become `_total` counters; a field missing from the block emits no family, so a
//! cut block never shows a made-up zero.

use super::{Family, Kind};
use crate::decode::memstats::MemStats;

/// Nanoseconds per second, for Go's nanosecond fields.
const NS: f64 = 1e9;

/// The MemStats metric families, in a fixed order, for the fields present.
pub fn memstats_families(m: &MemStats) -> Vec<Family> {
    let num = |v: Option<u64>| v.map(|v| v as f64);
    let defs: [(&'static str, Kind, &'static str, Option<f64>); 28] = [
        (
            "pprof_go_memstats_heap_alloc_bytes",
            Kind::Gauge,
            "Bytes of allocated heap objects, reachable or not yet freed by the GC (MemStats.HeapAlloc).",
            num(m.heap_alloc),
        ),
        (
            "pprof_go_memstats_heap_inuse_bytes",
            Kind::Gauge,
            "Bytes in heap spans holding at least one object (MemStats.HeapInuse); the excess over heap_alloc bounds fragmentation.",
            num(m.heap_inuse),
        ),
        (
            "pprof_go_memstats_heap_idle_bytes",
            Kind::Gauge,
            "Bytes in heap spans holding no object, returned to the OS or kept for reuse (MemStats.HeapIdle).",
            num(m.heap_idle),
        ),
        (
            "pprof_go_memstats_heap_released_bytes",
            Kind::Gauge,
            "Bytes of idle heap spans returned to the OS (MemStats.HeapReleased); normally no longer resident.",
            num(m.heap_released),
        ),
        (
            "pprof_go_memstats_heap_sys_bytes",
            Kind::Gauge,
            "Bytes of address space reserved for the heap (MemStats.HeapSys), released parts included.",
            num(m.heap_sys),
        ),
        (
            "pprof_go_memstats_heap_objects",
            Kind::Gauge,
            "Allocated heap objects (MemStats.HeapObjects).",
            num(m.heap_objects),
        ),
        (
            "pprof_go_memstats_sys_bytes",
            Kind::Gauge,
            "All bytes of address space the Go runtime obtained from the OS (MemStats.Sys).",
            num(m.sys),
        ),
        (
            "pprof_go_memstats_stack_inuse_bytes",
            Kind::Gauge,
            "Bytes in goroutine stack spans (MemStats.StackInuse).",
            num(m.stack_inuse),
        ),
        (
            "pprof_go_memstats_stack_sys_bytes",
            Kind::Gauge,
            "Stack bytes obtained from the OS (MemStats.StackSys).",
            num(m.stack_sys),
        ),
        (
            "pprof_go_memstats_mspan_inuse_bytes",
            Kind::Gauge,
            "Bytes of allocated mspan structures (MemStats.MSpanInuse).",
            num(m.mspan_inuse),
        ),
        (
            "pprof_go_memstats_mspan_sys_bytes",
            Kind::Gauge,
            "Bytes obtained from the OS for mspan structures (MemStats.MSpanSys).",
            num(m.mspan_sys),
        ),
        (
            "pprof_go_memstats_mcache_inuse_bytes",
            Kind::Gauge,
            "Bytes of allocated mcache structures (MemStats.MCacheInuse).",
            num(m.mcache_inuse),
        ),
        (
            "pprof_go_memstats_mcache_sys_bytes",
            Kind::Gauge,
            "Bytes obtained from the OS for mcache structures (MemStats.MCacheSys).",
            num(m.mcache_sys),
        ),
        (
            "pprof_go_memstats_buck_hash_sys_bytes",
            Kind::Gauge,
            "Bytes of profiling bucket hash tables (MemStats.BuckHashSys).",
            num(m.buck_hash_sys),
        ),
        (
            "pprof_go_memstats_gc_sys_bytes",
            Kind::Gauge,
            "Bytes of garbage collector metadata (MemStats.GCSys).",
            num(m.gc_sys),
        ),
        (
            "pprof_go_memstats_other_sys_bytes",
            Kind::Gauge,
            "Bytes of miscellaneous off-heap runtime allocations (MemStats.OtherSys).",
            num(m.other_sys),
        ),
        (
            "pprof_go_memstats_next_gc_bytes",
            Kind::Gauge,
            "Heap size the next GC cycle aims for (MemStats.NextGC).",
            num(m.next_gc),
        ),
        (
            "pprof_go_memstats_last_gc_timestamp_seconds",
            Kind::Gauge,
            "When the last GC cycle finished, in seconds since the Unix epoch; 0 before the first (MemStats.LastGC).",
            m.last_gc_ns.map(|ns| ns as f64 / NS),
        ),
        (
            "pprof_go_memstats_last_gc_pause_seconds",
            Kind::Gauge,
            "Stop-the-world pause of the last GC cycle (MemStats.PauseNs); the block has no cumulative pause total.",
            m.last_pause_ns().map(|ns| ns as f64 / NS),
        ),
        (
            "pprof_go_memstats_gc_cpu_fraction",
            Kind::Gauge,
            "Fraction of the target's CPU time used by the GC since it started (MemStats.GCCPUFraction).",
            m.gc_cpu_fraction,
        ),
        (
            "pprof_go_memstats_alloc_bytes_total",
            Kind::Counter,
            "Bytes allocated for heap objects since the target started (MemStats.TotalAlloc).",
            num(m.total_alloc),
        ),
        (
            "pprof_go_memstats_mallocs_total",
            Kind::Counter,
            "Heap objects allocated since the target started (MemStats.Mallocs).",
            num(m.mallocs),
        ),
        (
            "pprof_go_memstats_frees_total",
            Kind::Counter,
            "Heap objects freed since the target started (MemStats.Frees).",
            num(m.frees),
        ),
        (
            "pprof_go_memstats_lookups_total",
            Kind::Counter,
            "Pointer lookups by the runtime since the target started (MemStats.Lookups).",
            num(m.lookups),
        ),
        (
            "pprof_go_memstats_gc_cycles_total",
            Kind::Counter,
            "Completed GC cycles since the target started (MemStats.NumGC).",
            num(m.num_gc),
        ),
        (
            "pprof_go_memstats_forced_gc_cycles_total",
            Kind::Counter,
            "GC cycles forced by the application calling runtime.GC (MemStats.NumForcedGC).",
            num(m.num_forced_gc),
        ),
        (
            "pprof_go_memstats_go_accounted_bytes",
            Kind::Gauge,
            "Memory the Go runtime holds from the OS by its own accounting: Sys minus HeapReleased. Resident memory well above it is off-heap (cgo, mmap) memory.",
            go_accounted(m).map(|v| v as f64),
        ),
        (
            "pprof_go_memstats_max_rss_bytes",
            Kind::Gauge,
            "Peak resident set size of the target process, from getrusage (MaxRSS line of heap?debug=1, Unix only).",
            num(m.max_rss),
        ),
    ];
    defs.into_iter()
        .filter_map(|(name, kind, help, value)| {
            let value = value?;
            let mut family = Family::new(name, kind, help);
            family.push(Vec::new(), value);
            Some(family)
        })
        .collect()
}

/// `Sys - HeapReleased`: what the runtime obtained from the OS and has not handed
/// back. `None` if either is missing or they are inconsistent (released above Sys).
pub fn go_accounted(m: &MemStats) -> Option<u64> {
    m.sys?.checked_sub(m.heap_released?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::memstats::parse_memstats;

    fn value(fams: &[Family], name: &str) -> Option<f64> {
        let f = fams.iter().find(|f| f.name == name)?;
        assert_eq!(f.series.len(), 1, "{name}");
        assert!(f.series[0].labels.is_empty(), "{name}");
        Some(f.series[0].value)
    }

    #[test]
    fn fixture_values_in_base_units() {
        for text in [
            &include_bytes!("../../tests/fixtures/text/heap-debug1-go1.19.txt")[..],
            include_bytes!("../../tests/fixtures/text/heap-debug1-go1.27.txt"),
        ] {
            let m = parse_memstats(text).unwrap();
            let fams = memstats_families(&m);
            let f = |v: Option<u64>| v.map(|v| v as f64);
            let cases = [
                ("pprof_go_memstats_heap_alloc_bytes", f(m.heap_alloc)),
                ("pprof_go_memstats_heap_inuse_bytes", f(m.heap_inuse)),
                ("pprof_go_memstats_heap_idle_bytes", f(m.heap_idle)),
                ("pprof_go_memstats_heap_released_bytes", f(m.heap_released)),
                ("pprof_go_memstats_heap_sys_bytes", f(m.heap_sys)),
                ("pprof_go_memstats_heap_objects", f(m.heap_objects)),
                ("pprof_go_memstats_sys_bytes", f(m.sys)),
                ("pprof_go_memstats_stack_inuse_bytes", f(m.stack_inuse)),
                ("pprof_go_memstats_stack_sys_bytes", f(m.stack_sys)),
                ("pprof_go_memstats_mspan_inuse_bytes", f(m.mspan_inuse)),
                ("pprof_go_memstats_mspan_sys_bytes", f(m.mspan_sys)),
                ("pprof_go_memstats_mcache_inuse_bytes", f(m.mcache_inuse)),
                ("pprof_go_memstats_mcache_sys_bytes", f(m.mcache_sys)),
                ("pprof_go_memstats_buck_hash_sys_bytes", f(m.buck_hash_sys)),
                ("pprof_go_memstats_gc_sys_bytes", f(m.gc_sys)),
                ("pprof_go_memstats_other_sys_bytes", f(m.other_sys)),
                ("pprof_go_memstats_next_gc_bytes", f(m.next_gc)),
                (
                    "pprof_go_memstats_last_gc_timestamp_seconds",
                    m.last_gc_ns.map(|n| n as f64 / 1e9),
                ),
                (
                    "pprof_go_memstats_last_gc_pause_seconds",
                    m.last_pause_ns().map(|n| n as f64 / 1e9),
                ),
                ("pprof_go_memstats_gc_cpu_fraction", m.gc_cpu_fraction),
                ("pprof_go_memstats_alloc_bytes_total", f(m.total_alloc)),
                ("pprof_go_memstats_mallocs_total", f(m.mallocs)),
                ("pprof_go_memstats_frees_total", f(m.frees)),
                ("pprof_go_memstats_lookups_total", f(m.lookups)),
                ("pprof_go_memstats_gc_cycles_total", f(m.num_gc)),
                (
                    "pprof_go_memstats_forced_gc_cycles_total",
                    f(m.num_forced_gc),
                ),
                (
                    "pprof_go_memstats_go_accounted_bytes",
                    Some((m.sys.unwrap() - m.heap_released.unwrap()) as f64),
                ),
                ("pprof_go_memstats_max_rss_bytes", f(m.max_rss)),
            ];
            assert_eq!(fams.len(), cases.len());
            for (name, want) in cases {
                assert!(want.is_some(), "{name} missing from the fixture");
                assert_eq!(value(&fams, name), want, "{name}");
            }
            // The timestamp is a plausible wall-clock time, so the unit is seconds.
            let ts = value(&fams, "pprof_go_memstats_last_gc_timestamp_seconds").unwrap();
            assert!((1.6e9..4e9).contains(&ts), "{ts}");
            for fam in &fams {
                assert_eq!(
                    fam.kind == Kind::Counter,
                    fam.name.ends_with("_total"),
                    "{}",
                    fam.name
                );
                assert!(!fam.help.is_empty());
            }
        }
    }

    #[test]
    fn missing_fields_emit_nothing() {
        let m = MemStats {
            sys: Some(100),
            heap_released: Some(30),
            ..MemStats::default()
        };
        let fams = memstats_families(&m);
        let mut names: Vec<_> = fams.iter().map(|f| f.name).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "pprof_go_memstats_go_accounted_bytes",
                "pprof_go_memstats_heap_released_bytes",
                "pprof_go_memstats_sys_bytes",
            ]
        );
        assert_eq!(
            value(&fams, "pprof_go_memstats_go_accounted_bytes"),
            Some(70.0)
        );
        let inconsistent = MemStats {
            sys: Some(10),
            heap_released: Some(30),
            ..MemStats::default()
        };
        assert_eq!(go_accounted(&inconsistent), None);
        assert!(memstats_families(&MemStats::default()).is_empty());
    }
}
