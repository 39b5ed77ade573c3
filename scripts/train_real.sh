#!/usr/bin/env bash
# The real-geometry stage (configs/real-mix.toml, the shipped stage 8, and configs/real-mix-freeze.toml):
# its data and the two candidates, in order (scripts/train_default.sh makes stage 7's
# data/models/lite-long3.pt they start from). Both train the query side of the shipped model on procedural photos
# plus synthetic photos of real CAD meshes; benchmarks/generalization.py --seed 41 decides by the
# rule written in configs/real-mix.toml.
#   scripts/train_real.sh [REAL_TRAIN] [WORKERS]      (default ../shared/real_train, nproc)
# The real meshes are read in place (never copied); data generation is a pure function of the
# seeds and the code. Each run resumes with `ibsr-train run ... --resume`.
set -euo pipefail
cd "$(dirname "$0")/.."
REAL_TRAIN="${1:-../shared/real_train}"
WORKERS="${2:-$(nproc)}"
PY="${PYTHON:-python3}"
"$PY" -m ibsr.cli.data real-split "$REAL_TRAIN" --out data/real       # train.csv (198) / heldout.csv (110)
"$PY" -m ibsr.cli.data photos data/real/train.csv --out data/real/train-photos --photos-per-shape 20 \
    --seed 101 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data synth --out data/mix/procedural --categories train --shapes-per-category 30 \
    --queries-per-shape 4 --seed 43 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data merge data/mix/procedural data/real/train-photos --out data/mix/train
"$PY" -m ibsr.cli.train run --config configs/real-mix.toml --out data/runs/real-mix
"$PY" -m ibsr.cli.train run --config configs/real-mix-freeze.toml --out data/runs/real-mix-freeze
