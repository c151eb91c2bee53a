#!/usr/bin/env python3
"""Times a command for scripts/bench: timed.py RUNS WORKDIR CMD [ARG...]

Prints two numbers for CMD, each the median of RUNS runs (the lower one for an
even RUNS): its wall time in seconds and its peak RSS in KB. Output goes to
/dev/null, stderr to WORKDIR/err; a failing run prints that stderr and makes the
script exit 1.

- Wall time: the clock starts just before the spawn and stops when wait4 returns,
  so neither a shell nor a wrapper process is counted.
- Peak RSS: from a second run of each round under /usr/bin/time. The RSS that wait4
  reports for a child spawned from here is no use: Linux carries the peak of the
  address space the child started in (this interpreter's, about 13 MB) across exec.
  /usr/bin/time forks from its own small process, so its figure is the command's.
"""

import os
import sys
import time


def run(cmd: list[str], err_path: str) -> int:
    """Runs cmd to completion; returns its wall time in nanoseconds."""
    out = os.open(os.devnull, os.O_WRONLY)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    actions = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    try:
        start = time.perf_counter_ns()
        pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=actions)
        _, status, _ = os.wait4(pid, 0)
        stop = time.perf_counter_ns()
    finally:
        os.close(out)
        os.close(err)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        with open(err_path, encoding="utf-8", errors="replace") as f:
            sys.stderr.write(f.read())
        sys.exit(f"timed.py: {' '.join(cmd)}: exit status {code}")
    return stop - start


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    runs = int(sys.argv[1])
    if runs < 1:
        print(f"timed.py: RUNS must be at least 1, not {runs}", file=sys.stderr)
        return 2
    work, cmd = sys.argv[2], sys.argv[3:]
    err_path, rss_path = os.path.join(work, "err"), os.path.join(work, "rss")
    walls, peaks = [], []
    for _ in range(runs):
        walls.append(run(cmd, err_path) / 1e9)
        run(["/usr/bin/time", "-f", "%M", "-o", rss_path, *cmd], err_path)
        with open(rss_path, encoding="utf-8") as f:
            peaks.append(int(f.read().split()[-1]))
    walls.sort()
    peaks.sort()
    mid = (runs - 1) // 2
    print(f"{walls[mid]:.4f} {peaks[mid]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
