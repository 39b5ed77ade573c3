#!/usr/bin/env bash
# Make the default model's data and train the shipped networks (docs/model-history.md): the exact
# commands, in order. Stages 1 to 9 run from their configs as git holds them at HISTORY (they left
# configs/ when it was named by intent; this needs a git checkout), stage 10 from configs/default.toml,
# stage 11 from configs/default-adapt.toml and `ibsr-train average`. Stage 1 is a GPU job (~10 minutes on one H100; on a CPU it runs, slowly),
# stages 2 to 5, 7, 9, 10 and 11 ran on a 2-core CPU (~2 h, ~40 min, ~50 min, ~95 min, ~95 min, ~1 h, ~45 min,
# ~11 min; resumable), the mask network runs anywhere.
#   scripts/train_default.sh [WORKERS]
# Data generation is a pure function of the seeds and the code, so any machine writes the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS="${1:-$(nproc)}"
PY="${PYTHON:-python3}"
HISTORY=26398b363dd272079eb567b1d10b41d9ddf4ad86
OLD=data/history/configs
mkdir -p data/history
git archive "$HISTORY" configs | tar -x -C data/history
"$PY" -m ibsr.cli.data synth --out data/lite-train --categories train --shapes-per-category 40 \
    --queries-per-shape 6 --seed 1 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data synth --out data/lite-val --categories train --shapes-per-category 8 \
    --queries-per-shape 2 --seed 2 --workers "$WORKERS" --json
# the retrieval model (CMIC, EfficientNet-Lite0 from ImageNet), stage 1 (GPU): both encoders
"$PY" -m ibsr.cli.train run --config "$OLD/lite.toml" --out data/runs/lite
"$PY" -m ibsr.cli.train export data/runs/lite/last.pt --out data/models/lite.pt
# stage 2 (a 2-core CPU: ~2 h, add --resume to continue a killed run): both encoders, fresh data
"$PY" -m ibsr.cli.data synth --out data/long/train --categories train --shapes-per-category 40 \
    --queries-per-shape 6 --seed 7 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train run --config "$OLD/lite-long.toml" --out data/runs/lite-long
"$PY" -m ibsr.cli.train export data/runs/lite-long/last.pt --out data/models/lite-long.pt
# stage 3 (a 2-core CPU: ~40 min): the query side on fresh shapes and photos
"$PY" -m ibsr.cli.data synth --out data/q2/train --categories train --shapes-per-category 30 \
    --queries-per-shape 4 --seed 5 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train run --config "$OLD/lite-long-query.toml" --out data/runs/lite-long-query
"$PY" -m ibsr.cli.train export data/runs/lite-long-query/last.pt --out data/models/lite-long-query.pt
# stage 4 (a 2-core CPU: ~50 min): the query side again, on other fresh shapes and photos
"$PY" -m ibsr.cli.data synth --out data/q3/train --categories train --shapes-per-category 40 \
    --queries-per-shape 4 --seed 11 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train run --config "$OLD/lite-long-query2.toml" --out data/runs/lite-long-query2
"$PY" -m ibsr.cli.train export data/runs/lite-long-query2/last.pt --out data/models/lite-long-query2.pt
# stage 5 (a 2-core CPU: ~95 min, add --resume to continue a killed run): both encoders, fresh data
"$PY" -m ibsr.cli.data synth --out data/q5/train --categories train --shapes-per-category 40 \
    --queries-per-shape 6 --seed 17 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train run --config "$OLD/lite-long2.toml" --out data/runs/lite-long2
"$PY" -m ibsr.cli.train export data/runs/lite-long2/last.pt --out data/models/lite-long2.pt
# stage 7 (a 2-core CPU: ~95 min, add --resume to continue a killed run): both encoders, fresh data
# (stage 6, lite-long2-query.toml, was not shipped and is not part of the chain)
"$PY" -m ibsr.cli.data synth --out data/q7/train --categories train --shapes-per-category 40 \
    --queries-per-shape 6 --seed 31 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train run --config "$OLD/lite-long3.toml" --out data/runs/lite-long3
"$PY" -m ibsr.cli.train export data/runs/lite-long3/last.pt --out data/models/lite-long3.pt
# the data of stages 8 and 9: procedural photos plus photos of real CAD meshes
# (REAL_TRAIN, default ../shared/real_train; read in place, never copied)
"$PY" -m ibsr.cli.data real-split "${REAL_TRAIN:-../shared/real_train}" --out data/real
"$PY" -m ibsr.cli.data photos data/real/train.csv --out data/real/train-photos --photos-per-shape 20 \
    --seed 101 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data synth --out data/mix/procedural --categories train --shapes-per-category 30 \
    --queries-per-shape 4 --seed 43 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data merge data/mix/procedural data/real/train-photos --out data/mix/train
# stage 9 (~50 min on one core): stage 8's recipe from stage 7 with an L2-SP pull of the query
# backbone toward ImageNet (stage 8 itself, real-mix.toml, is not in the chain)
"$PY" -m ibsr.cli.train run --config "$OLD/real-mix-anchor.toml" --out data/runs/real-mix-anchor
"$PY" -m ibsr.cli.train export data/runs/real-mix-anchor/last.pt --out data/models/real-mix-anchor.pt
# the data of stage 10: the real meshes in the home style too, and fresh procedural shapes
"$PY" -m ibsr.cli.data photos data/real/train.csv --out data/real/home-photos --photos-per-shape 8 \
    --per-category 400 --seed 102 --style home --front-azimuth 180 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data synth --out data/mix/procedural61 --categories train --shapes-per-category 55 \
    --queries-per-shape 4 --seed 61 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.data merge data/mix/procedural61 data/real/train-photos data/real/home-photos \
    --out data/mix/both61
# stage 10 (~42 min on two cores): stage 9 on both photo styles of the real meshes
"$PY" -m ibsr.cli.train run --config configs/default.toml --out data/runs/default
"$PY" -m ibsr.cli.train export data/runs/default/last.pt --out data/models/stage10.pt
# stage 11 (the default; ~11 min on one core): stage 10 adapted to the real training meshes, and
# the weight average of the two, 0.7 stage 10
"$PY" -m ibsr.cli.train adapt data/real/train.csv --config configs/default-adapt.toml \
    --weights data/models/stage10.pt --out data/models/adapt-train.pt --work data/adapt-train --json
"$PY" -m ibsr.cli.train average data/models/stage10.pt data/models/adapt-train.pt --weight 0.7 --weight 0.3 \
    --out ibsr/model/weights/default.pt
# the automatic-mask network: ibsr/model/weights/mask.pt
"$PY" -m ibsr.cli.data synth --out data/mtrain --categories train --shapes-per-category 30 \
    --queries-per-shape 8 --seed 1 --workers "$WORKERS" --json
"$PY" -m ibsr.cli.train mask --data data/mtrain --val data/lite-val --out data/runs/mask --steps 3000
cp data/runs/mask/last.pt ibsr/model/weights/mask.pt
