"""Encoder speed on this CPU: the default model's query and rendering encoders, float32 vs bf16
autocast, one torch thread (ratios in one run; the answer depends on the CPU's bf16 support).

    python benchmarks/encoders.py --json benchmarks/out/encoders.json

Prints ms per 12-view shape (views at the model's render size, 4 shapes per call), per photo in
batches of 8, and per single photo; the median of --repeat calls after one warm-up. Then the
accuracy of bf16 against float32 (`ibsr.model.inference`, IBSR_PRECISION): --accuracy-shapes
generated furniture shapes per category (seed 77), one photo of each and their 12 views;
embedding cosines, attention scores of every photo against every shape, top-1 and top-5
agreement, with bf16 in the query encoder, the rendering encoder, or both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import os

import numpy as np
import torch

from ibsr.geometry.mesh import normalize_mesh
from ibsr.geometry.render import render_views
from ibsr.kernels import attention_scores
from ibsr.model import inference, load_default_model, scale_pixels
from ibsr.photos.query import Query, query_tensor
from ibsr.synth import FURNITURE, catalog_shape, render_query_photo
from ibsr.precision import cpu_has_bf16


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def generated_inputs(model, per_category: int, seed: int = 77):
    """One photo of each generated shape (4 x Q x Q in [-1, 1]) and its views (N x V x 1 x S x S)."""
    c = model.config
    shapes = [catalog_shape(cat, i, seed) for cat in FURNITURE for i in range(per_category)]
    rng = np.random.default_rng(seed)
    queries = [Query(f"p{i}", *render_query_photo(s, rng), "file") for i, s in enumerate(shapes)]
    photos = torch.from_numpy(np.stack([query_tensor(q, c.query_size) for q in queries]))
    views = np.stack([render_views(normalize_mesh(s.mesh), c.render_size) for s in shapes])
    return photos, scale_pixels(torch.from_numpy(views)).unsqueeze(2)


def top_overlap(scores, ref, k: int) -> float:
    """Mean share of each row's top-k (by `ref`) that `scores` also ranks in its top-k."""
    pairs = zip(scores.topk(k, 1).indices.tolist(), ref.topk(k, 1).indices.tolist())
    return float(np.mean([len(set(a) & set(b)) / k for a, b in pairs]))


def bf16_accuracy(model, photos, views) -> list[dict]:
    """bf16 against float32 where bf16 is in the query encoder, the rendering encoder, or both."""
    out = {}
    for mode in ("float32", "bf16"):
        os.environ["IBSR_PRECISION"] = mode
        q = inference.embed_queries(model, photos)
        out[mode] = (q, model.attend(q).float(), inference.embed_views(model, views))
    os.environ.pop("IBSR_PRECISION")
    (q32, w32, v32), (q16, w16, v16) = out["float32"], out["bf16"]
    ref = attention_scores(q32, w32, v32.half())  # views as the index stores them
    rows = []
    for name, (q, w, v) in {"query encoder": (q16, w16, v32), "rendering encoder": (q32, w32, v16),
                            "both": (q16, w16, v16)}.items():
        s = attention_scores(q, w, v.half())
        cos = {"query": (q * q32).sum(-1), "views": (v * v32).sum(-1)}["query" if name == "query encoder" else "views"]
        rows.append({"bf16_in": name, "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                     "max_abs_score_diff": float((s - ref).abs().max()),
                     "top1_unchanged": int((s.argmax(1) == ref.argmax(1)).sum()), "photos": len(s),
                     "top5_overlap": top_overlap(s, ref, 5)})
    return rows


def main():
    # torch's threads and precision are what this measures (ONNX Runtime: benchmarks/runtime.py)
    os.environ.setdefault("IBSR_RUNTIME", "torch")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--accuracy-shapes", type=int, default=3, help="generated shapes per furniture category")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_default_model()
    c = model.config
    views = torch.rand(4, c.views, 1, c.render_size, c.render_size) * 2 - 1
    photos = torch.rand(8, 4, c.query_size, c.query_size) * 2 - 1
    rows = []
    for precision in ("float32", "bf16"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            rows.append({"precision": precision,
                         "ms_per_shape": median_ms(lambda: model.embed_views(views), args.repeat) / 4,
                         "ms_per_photo_batch8": median_ms(lambda: model.embed_queries(photos), args.repeat) / 8,
                         "ms_single_photo": median_ms(lambda: model.embed_queries(photos[:1]), args.repeat)})
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"cpu: {cpu}; native bf16: {cpu_has_bf16()}; torch {torch.__version__}, 1 thread")
    print(f"{'precision':<9} {'ms/shape (12 views)':>20} {'ms/photo (batch 8)':>19} {'ms/photo (single)':>18}")
    for r in rows:
        print(f"{r['precision']:<9} {r['ms_per_shape']:>20.1f} {r['ms_per_photo_batch8']:>19.1f} {r['ms_single_photo']:>18.1f}")
    accuracy = bf16_accuracy(model, *generated_inputs(model, args.accuracy_shapes))
    print(f"\n{'bf16 in':<18} {'cosine min':>10} {'mean':>7} {'max |score diff|':>17} {'top-1 same':>11} "
          f"{'top-5 overlap':>14}")
    for r in accuracy:
        print(f"{r['bf16_in']:<18} {r['cosine_min']:>10.4f} {r['cosine_mean']:>7.4f} {r['max_abs_score_diff']:>17.4f} "
              f"{r['top1_unchanged']:>5}/{r['photos']:<5} {r['top5_overlap']:>14.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu, "bf16_native": cpu_has_bf16(), "model": c.to_dict(),
                                         "rows": rows, "bf16_accuracy": accuracy}, indent=2) + "\n")


if __name__ == "__main__":
    main()
