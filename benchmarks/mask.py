"""Automatic masks: the learned mask network against GrabCut, on held-out photos with exact masks.

    python benchmarks/mask.py data/lite-test --photos 200 --json benchmarks/out/mask.json
    python benchmarks/mask.py data/lite-test --weights data/runs/mask/last.pt

DATASET is a dataset folder (its queries.jsonl) or a queries.jsonl whose records have masks
(`ibsr-data synth` writes them); photos must be ones the network never trained on. For each
photo, at the photo's own size: GrabCut as the searcher runs it (`grabcut_mask`), the network
(`predict_mask`), the network plus two clean-ups (largest connected component; holes filled)
to see whether either helps, and `automatic_mask(..., "model")`, the searcher's path with its
GrabCut fallback for empty or tiny network masks. Reports mean / median IoU with the exact
mask, the share of photos under IoU 0.5, the mean IoU per category (JSON; the five lowest are
printed), and the mean milliseconds per photo (one thread by default, the photo already
decoded; the network's time includes its resizes).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage

from ibsr.eval import read_queries
from ibsr.photos.image import load_image, load_mask
from ibsr.photos.mask import automatic_mask, grabcut_mask
from ibsr.photos.mask_model import load_mask_model, predict_mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background + at most one component
        return mask
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    union = (mask | truth).sum()
    return float((mask & truth).sum() / union) if union else 1.0


def measure(name: str, photos, method) -> dict:
    ious, sources, seconds = [], {}, 0.0
    for rgb, truth, _ in photos:
        start = time.perf_counter()
        mask, source = method(rgb)
        seconds += time.perf_counter() - start
        ious.append(iou(mask, truth))
        sources[source] = sources.get(source, 0) + 1
    ious = np.array(ious)
    categories = np.array([category for _, _, category in photos])
    by_category = {c: round(float(ious[categories == c].mean()), 4) for c in sorted(set(categories))}
    return {"method": name, "ms_per_photo": round(1000 * seconds / len(photos), 1),
            "iou_mean": round(float(ious.mean()), 4), "iou_median": round(float(np.median(ious)), 4),
            "iou_below_0.5": round(float((ious < 0.5).mean()), 4), "mask_sources": sources,
            "iou_by_category": by_category}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="dataset folder or queries.jsonl (records with masks)")
    parser.add_argument("--weights", type=Path, default=None, help="mask network (default: the shipped mask.pt)")
    parser.add_argument("--photos", type=int, default=200, help="first N photos with a mask")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as a loaded 2-core machine)")
    parser.add_argument("--json", type=Path, help="also write the rows and the setup here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    queries_file = args.dataset / "queries.jsonl" if args.dataset.is_dir() else args.dataset
    photos = []
    for query in [q for q in read_queries(queries_file) if q.mask][:args.photos]:
        rgb, _ = load_image(query.image)
        photos.append((rgb, load_mask(query.mask, rgb.shape[:2]), query.category or query.shape_id.split("/")[0]))
    model = load_mask_model(args.weights, required=True)
    predict_mask(model, photos[0][0])  # warm-up: first-call allocations
    methods = {
        "grabcut": lambda rgb: (grabcut_mask(rgb), "grabcut"),
        "model": lambda rgb: (predict_mask(model, rgb), "model"),
        "model + largest component": lambda rgb: (largest_component(predict_mask(model, rgb)), "model"),
        "model + fill holes": lambda rgb: (ndimage.binary_fill_holes(predict_mask(model, rgb)), "model"),
        "searcher (model, GrabCut fallback)": lambda rgb: automatic_mask(rgb, "model", args.weights),
    }
    rows = [measure(name, photos, method) for name, method in methods.items()]
    sizes = sorted({f"{rgb.shape[1]}x{rgb.shape[0]}" for rgb, _, _ in photos})
    print(f"{len(photos)} photos ({', '.join(sizes)} px) of {queries_file}; {args.threads} torch thread(s)")
    print(f"{'method':<36} {'ms/photo':>9} {'IoU mean':>9} {'median':>7} {'<0.5':>6}")
    for row in rows:
        print(f"{row['method']:<36} {row['ms_per_photo']:>9.1f} {row['iou_mean']:>9.3f} {row['iou_median']:>7.3f} "
              f"{row['iou_below_0.5']:>6.1%}")
    worst = sorted(rows[1]["iou_by_category"].items(), key=lambda item: item[1])[:5]
    print("model's lowest categories (mean IoU): " + ", ".join(f"{c} {v:.3f}" for c, v in worst)
          + "; GrabCut's on those: " + ", ".join(f"{rows[0]['iou_by_category'][c]:.3f}" for c, _ in worst))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": platform.processor() or platform.machine(), "threads": args.threads,
            "queries": str(queries_file), "photos": len(photos), "sizes": sizes,
            "weights": str(args.weights) if args.weights else "shipped", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
