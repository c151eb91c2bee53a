//! The bench's own measuring scripts, run as `scripts/bench` runs them: `pairs.py`
//! (p99s of paired latency blocks and the bootstrap interval of their ratio) and
//! `timed.py` (median wall time and peak RSS of a command).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{root, scratch};

fn python(script: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(root().join("scripts").join(script))
        .args(args)
        .output()
        .expect("python3 runs")
}

/// Writes one latency (µs) per line to `dir/NAME`.
fn block(dir: &Path, name: &str, values: impl IntoIterator<Item = u64>) {
    let text: String = values.into_iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.join(name), text).unwrap();
}

/// 997 µs times 1..=1000, in a scrambled order: the script must sort, and a p99 one
/// rank off moves by 0.997 ms, which the two decimals it prints show.
fn scrambled() -> Vec<u64> {
    (0..1000u64)
        .map(|i| ((i * 7919) % 1000 + 1) * 997)
        .collect()
}

/// The five numbers pairs.py prints.
fn pairs(dir: &Path, rounds: usize) -> [f64; 5] {
    let out = python("pairs.py", &[dir.to_str().unwrap(), &rounds.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<f64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    nums.try_into()
        .unwrap_or_else(|n| panic!("five numbers, not {n:?}"))
}

/// The value at 1-based rank int(0.99 n) of the n values, ascending: the p99 as the
/// script's doc defines it.
fn p99(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[(v.len() * 99 / 100) - 1]
}

#[test]
fn one_round_gives_the_ratio_of_its_p99s_and_no_spread() {
    let dir = scratch("one-round");
    let a = scrambled();
    block(&dir, "A.1.txt", a.iter().copied());
    block(&dir, "B.1.txt", a.iter().map(|v| v * 2));
    // Rank 990 of the 1,000 is 990 x 997 µs; B is twice A.
    assert_eq!(pairs(&dir, 1), [987.03, 1974.06, 2.0, 2.0, 2.0]);
}

#[test]
fn rounds_that_disagree_give_an_interval_around_the_pooled_ratio() {
    let dir = scratch("four-rounds");
    let factors = [1.0, 1.1, 1.2, 1.3];
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    for (i, f) in factors.iter().enumerate() {
        let a = scrambled();
        let b: Vec<u64> = a.iter().map(|&v| (v as f64 * f).round() as u64).collect();
        block(&dir, &format!("A.{}.txt", i + 1), a.iter().copied());
        block(&dir, &format!("B.{}.txt", i + 1), b.iter().copied());
        all_a.extend(a);
        all_b.extend(b);
    }
    let [pa, pb, ratio, low, high] = pairs(&dir, factors.len());
    let (want_a, want_b) = (p99(&all_a), p99(&all_b));
    assert_eq!(pa, (want_a as f64 / 1000.0 * 100.0).round() / 100.0);
    assert_eq!(pb, (want_b as f64 / 1000.0 * 100.0).round() / 100.0);
    let want_ratio = want_b as f64 / want_a as f64;
    assert!(
        (ratio - want_ratio).abs() < 0.0005,
        "{ratio} vs {want_ratio}"
    );
    // Every resample pools rounds whose B is 1.0-1.3 times their A.
    assert!(low <= ratio && ratio <= high, "{low} {ratio} {high}");
    assert!(
        low < high,
        "the rounds disagree, so the interval has a width"
    );
    assert!(low >= 0.999 && high <= 1.301, "{low} {high}");
    // Seeded: the same files, the same interval.
    assert_eq!(pairs(&dir, factors.len()), [pa, pb, ratio, low, high]);
}

#[test]
fn pairs_refuses_bad_input_in_one_line() {
    let dir = scratch("bad");
    block(&dir, "A.1.txt", scrambled());
    block(&dir, "B.1.txt", scrambled());
    let d = dir.to_str().unwrap();
    let cases: [(&str, &[&str], i32, &str); 3] = [
        ("no rounds", &[d, "0"], 2, "ROUNDS must be at least 1"),
        ("a missing block", &[d, "2"], 1, "A.2.txt"),
        ("rounds not a number", &[d, "two"], 2, "ROUNDS"),
    ];
    for (what, args, code, says) in cases {
        let out = python("pairs.py", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}");
    }
    std::fs::write(dir.join("B.1.txt"), "1\nfast\n").unwrap();
    let out = python("pairs.py", &[d, "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("pairs.py: ") && err.contains("fast"),
        "{err}"
    );
    std::fs::write(dir.join("B.1.txt"), "").unwrap();
    let out = python("pairs.py", &[d, "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("an empty block"));
}

#[test]
fn timed_gives_the_median_wall_time_and_peak_rss_of_the_command() {
    let dir = scratch("timed");
    // 64 MiB written, then 0.2 s asleep: a floor under both figures.
    let work = "b = bytearray(b'x' * (64 << 20)); import time; time.sleep(0.2)";
    let out = python(
        "timed.py",
        &["3", dir.to_str().unwrap(), "python3", "-c", work],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (wall, rss) = text.trim().split_once(' ').expect("two numbers");
    let wall: f64 = wall.parse().unwrap();
    let rss: u64 = rss.parse().unwrap();
    assert!((0.2..30.0).contains(&wall), "{wall} s");
    assert!(rss >= 64 << 10, "{rss} KB");
    // A failing command stops it, with the command's own stderr passed on.
    let fail = "import sys; sys.exit('broken on purpose')";
    let out = python(
        "timed.py",
        &["1", dir.to_str().unwrap(), "python3", "-c", fail],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("broken on purpose") && err.contains("exit status 1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
