"""Automatic masks: GrabCut's time and mask quality against the side it runs at.

    python benchmarks/grabcut.py --queries data/synth-test/queries.jsonl --photos 60 --json out.json

For photos that come with a true mask (`ibsr-data synth` writes them), runs
`ibsr.photos.mask.grabcut_mask` at full size and shrunk to each `--sides`, and reports the
mean time per photo and the mean IoU with the true mask. Optionally upsamples the photos first
(`--upscale 4`) to see what a phone-sized photo costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from ibsr.eval import read_queries
from ibsr.photos.image import load_image, load_mask
from ibsr.photos.mask import GRABCUT_SIDE, grabcut_mask


def measure(photos: list[tuple[np.ndarray, np.ndarray]], side: int | None) -> dict:
    ious, seconds = [], 0.0
    for rgb, truth in photos:
        start = time.perf_counter()
        mask = grabcut_mask(rgb, side)
        seconds += time.perf_counter() - start
        ious.append((mask & truth).sum() / max(1, (mask | truth).sum()))
    return {"side": side or "full", "ms_per_photo": round(1000 * seconds / len(photos), 1),
            "mean_iou": round(float(np.mean(ious)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", required=True, type=Path, help="queries.jsonl whose records have masks")
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--sides", type=int, nargs="+", default=[256, GRABCUT_SIDE, 128])
    parser.add_argument("--upscale", type=int, default=1, help="enlarge each photo this many times first")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    photos = []
    for query in [q for q in read_queries(args.queries) if q.mask][:args.photos]:
        rgb, _ = load_image(query.image)
        truth = load_mask(query.mask, rgb.shape[:2])
        if args.upscale > 1:
            h, w = rgb.shape[:2]
            rgb = cv2.resize(rgb, (w * args.upscale, h * args.upscale), interpolation=cv2.INTER_CUBIC)
            truth = cv2.resize(truth.astype(np.uint8), (w * args.upscale, h * args.upscale),
                               interpolation=cv2.INTER_NEAREST).astype(bool)
        photos.append((rgb, truth))
    rows = [measure(photos, side) for side in [None, *args.sides]]
    full = rows[0]["ms_per_photo"]
    print(f"{len(photos)} photos of {photos[0][0].shape[1]} x {photos[0][0].shape[0]} px")
    print(f"{'side':>6} {'ms/photo':>9} {'speedup':>8} {'IoU':>6}")
    for row in rows:
        row["speedup_vs_full"] = round(full / row["ms_per_photo"], 2)
        print(f"{row['side']:>6} {row['ms_per_photo']:>9.1f} {row['speedup_vs_full']:>7.2f}x {row['mean_iou']:>6.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "photos": len(photos), "upscale": args.upscale, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
