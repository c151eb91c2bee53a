#!/usr/bin/env bash
# What tests/bench_tools.rs needs, idempotently: GNU time (Debian package time), through
# which scripts/timed.py takes the bench's peak RSS. Run by scripts/setup.sh, which
# exports apt_install.
set -euo pipefail

if [ ! -x /usr/bin/time ]; then
  echo "setup: installing Debian package time"
  if ! declare -F apt_install >/dev/null; then
    echo "bench-tools.sh: run scripts/setup.sh, which installs through it" >&2
    exit 1
  fi
  apt_install time
fi
