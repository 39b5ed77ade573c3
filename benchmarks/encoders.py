"""Encoder speed on this CPU: the default model's query and rendering encoders, float32 vs bf16
autocast, one torch thread (ratios in one run; the answer depends on the CPU's bf16 support).

    python benchmarks/encoders.py --json benchmarks/out/encoders.json

Prints ms per 12-view shape (views at the model's render size, 4 shapes per call), per photo in
batches of 8, and per single photo; the median of --repeat calls after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ibsr.model import load_default_model
from ibsr.train.loop import cpu_has_bf16


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu, "bf16_native": cpu_has_bf16(), "model": c.to_dict(),
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
