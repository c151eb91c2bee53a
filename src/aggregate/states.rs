//! Goroutine states and wait times per blocking function, from parsed debug=2 dumps.
//!
//! Goroutines are grouped by (blocking function, state), the function chosen by the
//! same rule as `pprof_goroutines` so the two can be joined. The cardinality limit
//! ranks those pairs by goroutine count and applies one decision to both families:
//! the pairs beyond it fold into `function="(other)", state="(other)"`, keeping the
//! `leaked` label so that sums by `leaked` stay exact.

use std::collections::BTreeMap;

use super::goroutines::blocking_function;
use super::{Dropped, Family, Kind, Limits, OTHER, limit};
use crate::decode::goroutine_text::Dump;

/// Counts of one (function, state) pair.
#[derive(Debug, Default, Clone, Copy)]
struct Group {
    /// Goroutines without and with the `(leaked)` mark.
    count: [i64; 2],
    /// Longest wait in the group, in minutes.
    max_wait_minutes: u64,
}

impl Group {
    fn total(&self) -> i64 {
        self.count[0].saturating_add(self.count[1])
    }

    fn merge(&mut self, other: &Group) {
        for (a, b) in self.count.iter_mut().zip(other.count) {
            *a = a.saturating_add(b);
        }
        self.max_wait_minutes = self.max_wait_minutes.max(other.max_wait_minutes);
    }
}

/// `pprof_goroutines_by_state{function,state,leaked}` and
/// `pprof_goroutine_wait_seconds_max{function,state}`, limited to the `limits.top`
/// (function, state) pairs with the most goroutines, with how many series each family
/// folded into `(other)`.
pub fn state_families(dump: &Dump, limits: &Limits) -> (Vec<Family>, Dropped) {
    // Keys borrow from the dump: no allocation per goroutine.
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();
    let mut names: Vec<&str> = Vec::new();
    for g in &dump.goroutines {
        names.clear();
        names.extend(g.frames.iter().map(String::as_str));
        let function = blocking_function(&names);
        let group = groups.entry((function, g.state.as_str())).or_default();
        let slot = &mut group.count[usize::from(g.leaked)];
        *slot = slot.saturating_add(1);
        group.max_wait_minutes = group.max_wait_minutes.max(g.wait_minutes.unwrap_or(0));
    }

    let items: Vec<((&str, &str), i64)> = groups.iter().map(|(k, g)| (*k, g.total())).collect();
    let limited = limit::top_n(items, limits.top);

    let mut by_state = Family::new(
        "pprof_goroutines_by_state",
        Kind::Gauge,
        "Goroutines in the last debug=2 dump per blocking call site and state (wait reason); leaked=\"true\" for those Go >= 1.26 marked (leaked) after a goroutine-leak GC.",
    );
    let mut wait = Family::new(
        "pprof_goroutine_wait_seconds_max",
        Kind::Gauge,
        "Longest time a goroutine of this call site and state had been blocked at the last debug=2 dump; Go counts whole minutes, so 0 means under a minute.",
    );
    let push_pair = |by_state: &mut Family, wait: &mut Family, f: &str, s: &str, g: &Group| {
        for (leaked, &count) in ["false", "true"].iter().zip(&g.count) {
            if count > 0 {
                by_state.push(
                    vec![
                        ("function", f.to_owned()),
                        ("state", s.to_owned()),
                        ("leaked", (*leaked).to_owned()),
                    ],
                    count as f64,
                );
            }
        }
        wait.push(
            vec![("function", f.to_owned()), ("state", s.to_owned())],
            g.max_wait_minutes.saturating_mul(60) as f64,
        );
    };

    for (key, _) in &limited.kept {
        if let Some(g) = groups.get(key) {
            push_pair(&mut by_state, &mut wait, key.0, key.1, g);
        }
    }
    // A folded pair can stand for two by_state series (leaked and not), so the two
    // families count their folded series separately.
    let mut folded_series = 0usize;
    if limited.dropped > 0 {
        let kept: std::collections::BTreeSet<(&str, &str)> =
            limited.kept.iter().map(|(k, _)| *k).collect();
        let mut other = Group::default();
        for (k, g) in &groups {
            if !kept.contains(k) {
                other.merge(g);
                folded_series += g.count.iter().filter(|&&c| c > 0).count();
            }
        }
        push_pair(&mut by_state, &mut wait, OTHER, OTHER, &other);
    }
    (
        vec![by_state, wait],
        vec![
            ("pprof_goroutines_by_state", folded_series),
            ("pprof_goroutine_wait_seconds_max", limited.dropped),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::goroutine_text::{Goroutine, parse_goroutines};

    fn g(frames: &[&str], state: &str, wait: Option<u64>, leaked: bool) -> Goroutine {
        Goroutine {
            state: state.to_owned(),
            wait_minutes: wait,
            leaked,
            frames: frames.iter().map(|f| f.to_string()).collect(),
            ..Goroutine::default()
        }
    }

    fn value(fams: &[Family], name: &str, labels: &[&str]) -> Option<f64> {
        fams.iter()
            .find(|f| f.name == name)?
            .series
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .map(|l| l.1.as_str())
                    .eq(labels.iter().copied())
            })
            .map(|s| s.value)
    }

    fn sum(fams: &[Family], name: &str) -> f64 {
        fams.iter()
            .filter(|f| f.name == name)
            .flat_map(|f| &f.series)
            .map(|s| s.value)
            .sum()
    }

    #[test]
    fn groups_by_blocking_function_state_and_mark() {
        let send = [
            "runtime.gopark",
            "runtime.chansend1",
            "main.send",
            "runtime.goexit",
        ];
        let dump = Dump {
            goroutines: vec![
                g(&send, "chan send", Some(2), false),
                g(&send, "chan send", Some(7), true),
                g(&send, "chan send", None, true),
                g(&send, "select", None, false),
                g(&["net/http.(*conn).serve"], "IO wait", None, false),
                g(&[], "running", None, false),
            ],
            truncated: false,
        };
        let (fams, dropped) = state_families(&dump, &Limits::default());
        let by = "pprof_goroutines_by_state";
        let wait = "pprof_goroutine_wait_seconds_max";
        let cases: [(&str, &[&str], Option<f64>); 9] = [
            (by, &["main.send", "chan send", "false"], Some(1.0)),
            (by, &["main.send", "chan send", "true"], Some(2.0)),
            (by, &["main.send", "select", "false"], Some(1.0)),
            (by, &["main.send", "select", "true"], None),
            (
                by,
                &["net/http.(*conn).serve", "IO wait", "false"],
                Some(1.0),
            ),
            (by, &["(unknown)", "running", "false"], Some(1.0)),
            (wait, &["main.send", "chan send"], Some(420.0)),
            (wait, &["main.send", "select"], Some(0.0)),
            (wait, &["(unknown)", "running"], Some(0.0)),
        ];
        for (name, labels, want) in cases {
            assert_eq!(value(&fams, name, labels), want, "{name}{labels:?}");
        }
        assert_eq!(sum(&fams, by), 6.0);
        assert_eq!(dropped, [(by, 0), (wait, 0)]);
        let label_names: Vec<_> = fams[0].series[0].labels.iter().map(|l| l.0).collect();
        assert_eq!(label_names, ["function", "state", "leaked"]);
    }

    #[test]
    fn folds_beyond_the_limit_keeping_sums() {
        let mut goroutines = Vec::new();
        for (i, n) in [5usize, 4, 3, 2, 1].iter().enumerate() {
            let f = format!("main.f{i}");
            for k in 0..*n {
                goroutines.push(g(&[&f], "chan receive", Some(k as u64), k == 0));
            }
        }
        let dump = Dump {
            goroutines,
            truncated: false,
        };
        let (fams, dropped) = state_families(
            &dump,
            &Limits {
                top: 2,
                stack_text: 100,
            },
        );
        let by = "pprof_goroutines_by_state";
        let wait = "pprof_goroutine_wait_seconds_max";
        assert_eq!(
            value(&fams, by, &["main.f0", "chan receive", "false"]),
            Some(4.0)
        );
        assert_eq!(
            value(&fams, by, &["main.f1", "chan receive", "true"]),
            Some(1.0)
        );
        assert_eq!(
            value(&fams, by, &["main.f2", "chan receive", "false"]),
            None
        );
        // f2, f3, f4: 6 goroutines, one marked leaked in each.
        assert_eq!(value(&fams, by, &[OTHER, OTHER, "false"]), Some(3.0));
        assert_eq!(value(&fams, by, &[OTHER, OTHER, "true"]), Some(3.0));
        assert_eq!(value(&fams, wait, &[OTHER, OTHER]), Some(120.0));
        assert_eq!(sum(&fams, by), 15.0);
        // f2 and f3 each had a leaked and a non-leaked series, f4 only a leaked one.
        assert_eq!(dropped, [(by, 5), (wait, 3)]);
    }

    #[test]
    fn fixture_families() {
        for (name, text, leaked) in [
            (
                "go1.19",
                &include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.19.txt")[..],
                "false",
            ),
            (
                "go1.27",
                include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.27.txt"),
                "false",
            ),
            (
                "go1.27 leaked",
                include_bytes!("../../tests/fixtures/text/goroutine-debug2-go1.27-leaked.txt"),
                "true",
            ),
        ] {
            let dump = parse_goroutines(text).unwrap();
            let (fams, _) = state_families(&dump, &Limits::default());
            let by = "pprof_goroutines_by_state";
            let wait = "pprof_goroutine_wait_seconds_max";
            assert_eq!(
                value(
                    &fams,
                    by,
                    &["main.blockedSender.func1", "chan send", leaked]
                ),
                Some(20.0),
                "{name}"
            );
            assert_eq!(
                value(
                    &fams,
                    by,
                    &["main.selectForever", "select (no cases)", leaked]
                ),
                Some(5.0),
                "{name}"
            );
            assert_eq!(
                value(
                    &fams,
                    by,
                    &["main.labeledWorker.func1", "chan receive", "false"]
                ),
                Some(7.0),
                "{name}"
            );
            assert_eq!(sum(&fams, by), dump.goroutines.len() as f64, "{name}");
            // All three were captured about three minutes after start; leaked ones
            // lose their wait time.
            assert_eq!(
                value(&fams, wait, &["main.labeledWorker.func1", "chan receive"]),
                Some(180.0),
                "{name}"
            );
            let sender_wait = if leaked == "true" { 0.0 } else { 180.0 };
            assert_eq!(
                value(&fams, wait, &["main.blockedSender.func1", "chan send"]),
                Some(sender_wait),
                "{name}"
            );
        }
    }

    #[test]
    fn empty_dump() {
        let (fams, dropped) = state_families(&Dump::default(), &Limits::default());
        assert!(fams.iter().all(|f| f.series.is_empty()));
        assert_eq!(dropped.iter().map(|d| d.1).sum::<usize>(), 0);
    }
}
