"""Synthetic query photos: time per photo for each style, and a contact sheet to look at.

    python benchmarks/synth_photos.py --photos 48 --size 256 --json benchmarks/out/synth_photos.json \
        --sheet /tmp/photos

Renders `--photos` photos per style (`sample_query_photo`: params drawn, photo rendered,
redrawn when the object is barely visible) of shapes cycling through the categories, after one
warm-up photo, and reports the mean and 90th-percentile wall time and the mean CPU time per
photo (CPU time counts every thread of the process and is less disturbed by other jobs on a
shared machine). `--sheet DIR` writes DIR/<style>.png, a 4 x 4 grid of the first 16 photos
(JPEG-compressed at each photo's quality, as `ibsr-data synth` writes them).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from ibsr.synth import CATEGORIES, make_shape
from ibsr.synth.photo import STYLES, sample_query_photo


def as_written(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def measure(style: str, photos: int, size: int, sheet: Path | None) -> dict:
    shapes = [make_shape(c, np.random.default_rng(1000 + i)) for i, c in enumerate(CATEGORIES)]
    sample_query_photo(shapes[0], np.random.default_rng(0), size, style=style)  # warm-up (imports, caches)
    wall, cpu, tiles = [], [], []
    for k in range(photos):
        start, start_cpu = time.perf_counter(), time.process_time()
        rgb, _, params = sample_query_photo(shapes[k % len(shapes)], np.random.default_rng(k), size, style=style)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if len(tiles) < 16:
            tiles.append(as_written(rgb, params.jpeg_quality))
    if sheet is not None and len(tiles) == 16:
        sheet.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sheet / f"{style}.png"), np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, 16, 4)]))
    return {"style": style, "photos": photos, "size": size,
            "wall_ms_mean": round(1000 * float(np.mean(wall)), 1),
            "wall_ms_p90": round(1000 * float(np.percentile(wall, 90)), 1),
            "cpu_ms_mean": round(1000 * float(np.mean(cpu)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48, help="photos per style")
    parser.add_argument("--size", type=int, default=256, help="photo side, px")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--sheet", type=Path, help="write a 4 x 4 contact sheet per style into this folder")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = [measure(style, args.photos, args.size, args.sheet) for style in args.styles]
    print(f"{'style':>8} {'photos':>6} {'wall ms':>8} {'p90 ms':>7} {'cpu ms':>7}")
    for row in rows:
        print(f"{row['style']:>8} {row['photos']:>6} {row['wall_ms_mean']:>8.1f} {row['wall_ms_p90']:>7.1f} "
              f"{row['cpu_ms_mean']:>7.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        machine = platform.processor() or platform.machine()
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
