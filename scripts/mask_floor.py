"""Measure a mask network's certainty floor on photos like its training ones, and write a copy of
the network that carries it (`MaskConfig.certainty_floor`: below it the searcher takes the whole
photo as the object). `ibsr-train mask` does this at the end of every run; this script is for a
network trained before it did, such as the shipped one:

    python scripts/mask_floor.py ibsr/model/weights/mask.pt --data data/mix/balanced71 --out mask-floor.pt

--data: dataset folders with exact masks (`ibsr-data synth`, `ibsr-data photos`, `ibsr-data merge`);
FLOOR_PHOTOS of their photos, drawn with --seed, are decoded (only those) and measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ibsr.errors import IbsrError
from ibsr.eval.queries import read_queries
from ibsr.model.segmenter import load_mask_checkpoint, save_mask_checkpoint
from ibsr.train.mask import FLOOR_PERCENTILE, FLOOR_PHOTOS, certainty_floor, load_mask_photos


def sampled_folder(folders: list[str], out: Path, photos: int, seed: int) -> Path:
    """A dataset folder of `photos` lines drawn from the folders' queries (absolute paths)."""
    lines = []
    for folder in folders:
        for q in read_queries(Path(folder) / "queries.jsonl"):
            lines.append({"image": str(q.image), "mask": None if q.mask is None else str(q.mask),
                          "shape_id": q.shape_id, "category": q.category})
    pick = np.random.default_rng(seed).choice(len(lines), min(photos, len(lines)), replace=False)
    (out / "queries.jsonl").write_text("".join(json.dumps(lines[i]) + "\n" for i in sorted(pick)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="the mask network (.pt from `ibsr-train mask`)")
    parser.add_argument("--data", action="append", required=True, help="dataset folder with exact masks; repeat")
    parser.add_argument("--out", required=True, help="where to write the network with its floor")
    parser.add_argument("--seed", type=int, default=0, help="which photos are drawn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        model, info = load_mask_checkpoint(args.weights)
        with tempfile.TemporaryDirectory() as tmp:
            folder = sampled_folder(args.data, Path(tmp), FLOOR_PHOTOS, args.seed)
            photos = load_mask_photos([folder], model.config.size, Path(tmp) / "cache")
        floor = certainty_floor(model, photos.images, torch.device("cpu"), photos=len(photos.images))
    except IbsrError as e:
        sys.exit(f"error: {e}")
    model.config = replace(model.config, certainty_floor=floor)
    how = {"photos": len(photos.images), "percentile": FLOOR_PERCENTILE, "data": args.data, "seed": args.seed,
           "command": " ".join(["python", *sys.argv])}
    save_mask_checkpoint(model, args.out, {**info, "certainty_floor": how})
    print(json.dumps({"out": args.out, "certainty_floor": floor, **how}))


if __name__ == "__main__":
    main()
