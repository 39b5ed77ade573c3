"""Write `ibsr/runtime/calibration_photos.npz`: the generated photos and their exact masks that
the int8 networks are calibrated on (`ibsr.runtime.quantize`).

    python scripts/calibration_photos.py [--out ibsr/runtime/calibration_photos.npz]

The photos ship with the package because the runtime sits below `ibsr.synth` (tests/test_layers.py):
a search must not render. They are `PHOTOS` synthetic query photos (`ibsr.synth`, seed `SEED`)
over the training categories, alternately in the default and the home style, 256 px, as JPEG
(quality 90), their masks as PNG, in one npz without pickles: `jpeg` and `png` (the concatenated
files, uint8), `ends` and `png_ends` (each file's end offset). tests/test_runtime.py renders the
first ones again and compares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from ibsr.synth.photo import render_query_photo
from ibsr.synth.shapes import TRAIN, catalog_shape, derive_rng

PHOTOS = 48
SEED = 2026
SIZE = 256
QUALITY = 90
OUT = Path(__file__).resolve().parents[1] / "ibsr" / "runtime" / "calibration_photos.npz"


def calibration_photo(i: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th calibration photo, H x W x 3 uint8 RGB, and its exact object mask, H x W bool."""
    category, style = TRAIN[i % len(TRAIN)], ("default", "home")[i % 2]
    shape = catalog_shape(category, 1000 + i, SEED)
    return render_query_photo(shape, derive_rng(SEED, 1, category, i), SIZE, style=style)


def encoded(ext: str, image: np.ndarray, i: int, params=()) -> np.ndarray:
    ok, data = cv2.imencode(ext, image, list(params))
    if not ok:
        raise SystemExit(f"OpenCV could not encode calibration photo {i} as {ext}; nothing was written")
    return data.ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the npz to write (default: the packaged one)")
    args = parser.parse_args()
    photos, masks = [], []
    for i in range(PHOTOS):
        rgb, mask = calibration_photo(i)
        photos.append(encoded(".jpg", rgb[:, :, ::-1], i, [cv2.IMWRITE_JPEG_QUALITY, QUALITY]))
        masks.append(encoded(".png", mask.astype(np.uint8) * 255, i))
    np.savez(args.out, jpeg=np.concatenate(photos), ends=np.cumsum([len(f) for f in photos]),
             png=np.concatenate(masks), png_ends=np.cumsum([len(f) for f in masks]))
    print(f"{args.out}: {PHOTOS} photos, {args.out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
