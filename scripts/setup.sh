#!/usr/bin/env bash
# Create (or update) the virtual environment and install ibsr into it.
#   scripts/setup.sh [VENV_DIR]        (default .venv)
# torch: an already installed torch is kept (GPU users install theirs first, or set
# IBSR_TORCH_SPEC, e.g. IBSR_TORCH_SPEC="torch==2.13.0"). Without CUDA we install the CPU
# build so pip never pulls a multi-GB CUDA wheel: from a local wheel store when pip has one
# (pip's find-links), else from PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${IBSR_TORCH_SPEC:-}" ]; then
    "${PIP[@]}" install "$IBSR_TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" install torch                       # CUDA build from PyPI
  else
    echo "ibsr setup: no CUDA device, installing the CPU build of torch" >&2
    "${PIP[@]}" install --no-index torch==2.13.0 2>/dev/null \
      || "${PIP[@]}" install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
           --extra-index-url https://pypi.org/simple
  fi
fi
"${PIP[@]}" install -e ".[test]"
