#!/usr/bin/env python3
"""p99 of paired latency blocks for scripts/bench: pairs.py DIR ROUNDS

DIR holds A.1.txt .. A.ROUNDS.txt and B.1.txt .. B.ROUNDS.txt, one latency in
microseconds per line (testdata/loadgen/rate -out), block A and block B of each
round taken one after the other. Prints five numbers:

    p99_A_ms p99_B_ms ratio low high

- p99_A_ms, p99_B_ms: the p99 of every request of the A blocks and of the B blocks
  pooled, in milliseconds (the value at rank int(0.99 n) of n sorted).
- ratio: p99_B / p99_A, of the unrounded values.
- low, high: the 5th and 95th percentiles of the ratio p99_B / p99_A over 2,000
  resamples that draw ROUNDS rounds with replacement, each round keeping its A and
  B blocks together (a pair bootstrap). Neighbouring blocks share whatever the
  machine was doing then; the spread between rounds is what the interval shows.
  Seeded, so one set of files always gives the same interval.
"""

import random
import sys

RESAMPLES = 2000
SEED = 20261203


def read_block(path: str) -> list[int]:
    with open(path, encoding="ascii") as f:
        return [int(line) for line in f if line.strip()]


def p99(tops: list[list[int]], n: int) -> int:
    """The value at 1-based rank int(0.99 n) in ascending order of n values, from the
    largest values of each block (enough of them to hold that rank)."""
    from_top = n - int(0.99 * n) + 1  # 1-based rank counted from the largest
    merged = sorted((v for top in tops for v in top), reverse=True)
    return merged[from_top - 1]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    folder, rounds = sys.argv[1], int(sys.argv[2]) if sys.argv[2].isdigit() else 0
    if rounds < 1:
        print("pairs.py: ROUNDS must be at least 1", file=sys.stderr)
        return 2
    try:
        blocks = {
            side: [read_block(f"{folder}/{side}.{i}.txt") for i in range(1, rounds + 1)]
            for side in "AB"
        }
    except (OSError, ValueError) as e:
        print(f"pairs.py: {e}", file=sys.stderr)
        return 1
    if any(not b for side in blocks.values() for b in side):
        print("pairs.py: an empty block", file=sys.stderr)
        return 1
    # A resample pools at most `rounds` copies of the largest block; its p99 lies
    # within that many values of the top, so each block keeps only its largest `keep`.
    largest = max(len(b) for side in blocks.values() for b in side)
    keep = rounds * largest - int(0.99 * rounds * largest) + 1
    tops = {
        side: [sorted(b, reverse=True)[:keep] for b in side_blocks]
        for side, side_blocks in blocks.items()
    }
    sizes = {side: [len(b) for b in side_blocks] for side, side_blocks in blocks.items()}

    def ratio_and_p99s(picks: list[int]) -> tuple[float, int, int]:
        a = p99([tops["A"][i] for i in picks], sum(sizes["A"][i] for i in picks))
        b = p99([tops["B"][i] for i in picks], sum(sizes["B"][i] for i in picks))
        return b / a, a, b

    ratio, a, b = ratio_and_p99s(list(range(rounds)))
    rng = random.Random(SEED)
    ratios = sorted(
        ratio_and_p99s([rng.randrange(rounds) for _ in range(rounds)])[0]
        for _ in range(RESAMPLES)
    )
    low = ratios[int(0.05 * RESAMPLES)]
    high = ratios[int(0.95 * RESAMPLES) - 1]
    print(f"{a / 1000:.2f} {b / 1000:.2f} {ratio:.3f} {low:.3f} {high:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
