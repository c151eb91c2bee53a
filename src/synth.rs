//! Synthetic pprof profiles, seeded and sized by the caller, for the oracle tests and
//! benchmarks: heap profiles (four sample types, like Go's) and goroutine profiles
//! (a count per stack, `runtime.gopark` at the leaf, optional goroutine labels).
//!
//! Stacks are random walks down a fixed call graph so that, as in real programs, many
//! samples share callers; some locations carry inlined lines, and some stacks recurse.

use std::collections::HashMap;

use crate::decode::profile::pb;

/// Which kind of profile to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthKind {
    /// alloc_objects, alloc_space, inuse_objects, inuse_space.
    Heap,
    /// goroutine/count, leaf `runtime.gopark`.
    Goroutine,
}

/// Shape of a generated profile.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Profile kind.
    pub kind: SynthKind,
    /// PRNG seed: the same seed and sizes give the same bytes.
    pub seed: u64,
    /// Number of samples (distinct stacks for goroutine profiles).
    pub samples: usize,
    /// Number of distinct functions.
    pub functions: usize,
    /// Deepest stack, in locations.
    pub max_depth: usize,
}

/// SplitMix64: tiny, fast and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p` percent.
    pub fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }
}

struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.get("");
        s
    }

    fn get(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_owned());
        self.index.insert(v.to_owned(), i);
        i
    }
}

/// Generates a profile.
pub fn generate(cfg: &SynthConfig) -> pb::Profile {
    let mut rng = Rng::new(cfg.seed);
    let mut strings = Strings::new();
    let n_funcs = cfg.functions.max(4);
    let mut functions = Vec::with_capacity(n_funcs + 8);
    for i in 0..n_funcs {
        let pkg = i % 97;
        let name = match i % 5 {
            0 => format!("example.com/svc/pkg{pkg}.(*Server{i}).Handle"),
            1 => format!("example.com/svc/pkg{pkg}.process{i}.func1"),
            2 => format!("example.com/lib/pkg{pkg}.Decode{i}"),
            3 => format!("main.worker{i}"),
            _ => format!("example.com/svc/pkg{pkg}.step{i}[...]"),
        };
        functions.push(pb::Function {
            id: i as u64 + 1,
            name: strings.get(&name),
            system_name: strings.get(&name),
            filename: strings.get(&format!("/src/pkg{pkg}/file{}.go", i % 13)),
            start_line: (i % 500) as i64 + 1,
        });
    }
    let runtime_names = [
        "runtime.gopark",
        "runtime.chanrecv",
        "runtime.selectgo",
        "runtime.goexit",
    ];
    let mut runtime_ids = Vec::new();
    for name in runtime_names {
        let id = functions.len() as u64 + 1;
        functions.push(pb::Function {
            id,
            name: strings.get(name),
            system_name: strings.get(name),
            filename: strings.get("/go/src/runtime/proc.go"),
            start_line: 1,
        });
        runtime_ids.push(id);
    }

    // A fixed call graph: each function calls a few "later" ones; walks go down it.
    let fanout = 4;
    let callees: Vec<Vec<usize>> = (0..n_funcs)
        .map(|i| {
            (0..fanout)
                .map(|_| (i + 1 + rng.below(n_funcs / 8 + 2)) % n_funcs)
                .collect()
        })
        .collect();

    // Locations are created on demand per (function, variant), some with inlined lines.
    let mut locations: Vec<pb::Location> = Vec::new();
    let mut loc_of: HashMap<(usize, usize), u64> = HashMap::new();
    let mut location =
        |f: usize, variant: usize, rng: &mut Rng, locations: &mut Vec<pb::Location>| -> u64 {
            *loc_of.entry((f, variant)).or_insert_with(|| {
                let id = locations.len() as u64 + 1;
                let mut line = vec![pb::Line {
                    function_id: f as u64 + 1,
                    line: 10 + variant as i64,
                    column: 0,
                }];
                // About one location in five has a callee inlined into it; the inlined
                // function comes first (innermost), as Go writes it.
                if rng.percent(20) {
                    let inl = callees[f][rng.below(fanout)];
                    line.insert(
                        0,
                        pb::Line {
                            function_id: inl as u64 + 1,
                            line: 3,
                            column: 0,
                        },
                    );
                }
                locations.push(pb::Location {
                    id,
                    mapping_id: 1,
                    address: 0x40_0000 + id * 16,
                    line,
                    is_folded: false,
                });
                id
            })
        };
    let runtime_loc = |i: usize, locations: &mut Vec<pb::Location>| -> u64 {
        let id = locations.len() as u64 + 1;
        locations.push(pb::Location {
            id,
            mapping_id: 1,
            address: 0x10_0000 + i as u64,
            line: vec![pb::Line {
                function_id: runtime_ids[i],
                line: 1,
                column: 0,
            }],
            is_folded: false,
        });
        id
    };
    let gopark = runtime_loc(0, &mut locations);
    let chanrecv = runtime_loc(1, &mut locations);
    let selectgo = runtime_loc(2, &mut locations);
    let goexit = runtime_loc(3, &mut locations);

    let label_keys = [strings.get("worker"), strings.get("pool")];
    let label_vals: Vec<i64> = (0..6).map(|i| strings.get(&format!("v{i}"))).collect();
    let bytes_key = strings.get("bytes");

    let mut samples = Vec::with_capacity(cfg.samples);
    for _ in 0..cfg.samples {
        let depth = 1 + rng.below(cfg.max_depth.max(1));
        let mut stack_root_first = Vec::with_capacity(depth + 2);
        let mut f = rng.below(n_funcs.min(64));
        for _ in 0..depth {
            stack_root_first.push(location(f, rng.below(3), &mut rng, &mut locations));
            // Occasional direct recursion: the same function again, same or other line.
            f = if rng.percent(8) {
                f
            } else {
                callees[f][rng.below(fanout)]
            };
        }
        let mut location_id: Vec<u64> = stack_root_first.into_iter().rev().collect();
        let mut label = Vec::new();
        let value = match cfg.kind {
            SynthKind::Heap => {
                let size = 16i64 << rng.below(12);
                let objects = 1 + rng.below(1000) as i64;
                let alloc_objects = objects * (1 + rng.below(50) as i64);
                let inuse_objects = if rng.percent(30) { 0 } else { objects };
                label.push(pb::Label {
                    key: bytes_key,
                    str: 0,
                    num: size,
                    num_unit: 0,
                });
                vec![
                    alloc_objects,
                    alloc_objects * size,
                    inuse_objects,
                    inuse_objects * size,
                ]
            }
            SynthKind::Goroutine => {
                let wait = if rng.percent(50) { chanrecv } else { selectgo };
                location_id.insert(0, wait);
                location_id.insert(0, gopark);
                location_id.push(goexit);
                if rng.percent(30) {
                    label.push(pb::Label {
                        key: label_keys[rng.below(2)],
                        str: label_vals[rng.below(label_vals.len())],
                        num: 0,
                        num_unit: 0,
                    });
                }
                vec![1 + (rng.next_u64() % 50) as i64]
            }
        };
        samples.push(pb::Sample {
            location_id,
            value,
            label,
        });
    }

    let sample_type = match cfg.kind {
        SynthKind::Heap => [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
        .iter()
        .map(|(t, u)| pb::ValueType {
            r#type: strings.get(t),
            unit: strings.get(u),
        })
        .collect(),
        SynthKind::Goroutine => vec![pb::ValueType {
            r#type: strings.get("goroutine"),
            unit: strings.get("count"),
        }],
    };
    let period_type = match cfg.kind {
        SynthKind::Heap => pb::ValueType {
            r#type: strings.get("space"),
            unit: strings.get("bytes"),
        },
        SynthKind::Goroutine => pb::ValueType {
            r#type: strings.get("goroutine"),
            unit: strings.get("count"),
        },
    };
    let mapping = vec![pb::Mapping {
        id: 1,
        memory_start: 0x40_0000,
        memory_limit: 0x4000_0000,
        filename: strings.get("/app/server"),
        has_functions: true,
        ..Default::default()
    }];
    pb::Profile {
        sample_type,
        sample: samples,
        mapping,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: 1_700_000_000_000_000_000,
        period_type: Some(period_type),
        period: if cfg.kind == SynthKind::Heap {
            524_288
        } else {
            1
        },
        ..Default::default()
    }
}

/// Encodes a profile as Go serves it: protobuf, gzip-compressed.
pub fn to_gzip(profile: &pb::Profile) -> Vec<u8> {
    use prost::Message;
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(&profile.encode_to_vec());
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_profile, gunzip_bounded, profile::DecodeLimits};

    #[test]
    fn generated_profiles_decode_and_are_deterministic() {
        for kind in [SynthKind::Heap, SynthKind::Goroutine] {
            let cfg = SynthConfig {
                kind,
                seed: 7,
                samples: 300,
                functions: 50,
                max_depth: 20,
            };
            let a = to_gzip(&generate(&cfg));
            assert_eq!(a, to_gzip(&generate(&cfg)));
            let raw = gunzip_bounded(&a, 1 << 30).unwrap();
            let p = decode_profile(&raw, DecodeLimits::default()).unwrap();
            assert_eq!(p.sample_count(), 300);
        }
    }
}
