#!/usr/bin/env bash
# Create (or update) the virtual environment and install ibsr into it.
#   scripts/setup.sh [--test] [VENV_DIR]        (default .venv)
# --test also installs what the test suite needs: pytest, the `ray` extra, and Debian's
# chromium (the evaluation report is rendered headless in a test).
# torch: an already installed torch is kept (GPU users install theirs first, or set
# IBSR_TORCH_SPEC, e.g. IBSR_TORCH_SPEC="torch==2.13.0"). Without CUDA we install the CPU
# build, torch==2.13.0 without its dependencies first, so pip never pulls a multi-GB CUDA
# wheel: from $IBSR_TORCH_INDEX_URL when set (an index of CPU builds), else from pip's own
# find-links (a local wheel store). Its dependencies then come from pip's configured index.
# This script names no index: pip's configuration (pip.conf, PIP_* variables) decides.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
if [ "${1:-}" = "--test" ]; then TEST=1; shift; fi
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${IBSR_TORCH_SPEC:-}" ]; then
    "${PIP[@]}" install "$IBSR_TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" install torch                       # a CUDA build, from pip's configured index
  else
    echo "ibsr setup: no CUDA device, installing the CPU build of torch" >&2
    if [ -n "${IBSR_TORCH_INDEX_URL:-}" ]; then
      "${PIP[@]}" install --no-deps --index-url "$IBSR_TORCH_INDEX_URL" torch==2.13.0
    elif ! "${PIP[@]}" install --no-index --no-deps torch==2.13.0 2>/dev/null; then
      echo "ibsr setup: no CPU build of torch 2.13.0 in pip's find-links; set IBSR_TORCH_INDEX_URL to a" \
        "package index that has one (PyTorch publishes a CPU-only index), or IBSR_TORCH_SPEC, or install" \
        "torch into $VENV first" >&2
      exit 1
    fi
    "${PIP[@]}" install torch==2.13.0               # its dependencies: torch itself is installed
  fi
fi
if [ "$TEST" = 1 ]; then
  "${PIP[@]}" install -e ".[test,ray]"
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "ibsr setup: installing Debian's chromium for the report test" >&2
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
else
  "${PIP[@]}" install -e .
fi
