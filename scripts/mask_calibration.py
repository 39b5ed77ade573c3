"""Write `ibsr/runtime/mask_calibration.npz`: the generated photos the int8 mask network is
calibrated on (`ibsr.runtime.quantize`).

    python scripts/mask_calibration.py [--out ibsr/runtime/mask_calibration.npz]

The photos ship with the package because the runtime sits below `ibsr.synth` (tests/test_layers.py):
a search must not render. They are `PHOTOS` synthetic query photos (`ibsr.synth`, seed `SEED`)
over the training categories, alternately in the default and the home style, 256 px, as JPEG
(quality 90) in one npz without pickles: `jpeg` (the concatenated files, uint8) and `ends` (each
file's end offset). tests/test_runtime.py renders the first ones again and compares.
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
OUT = Path(__file__).resolve().parents[1] / "ibsr" / "runtime" / "mask_calibration.npz"


def calibration_photo(i: int) -> np.ndarray:
    """The i-th calibration photo, H x W x 3 uint8 RGB."""
    category, style = TRAIN[i % len(TRAIN)], ("default", "home")[i % 2]
    shape = catalog_shape(category, 1000 + i, SEED)
    rgb, _ = render_query_photo(shape, derive_rng(SEED, 1, category, i), SIZE, style=style)
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the npz to write (default: the packaged one)")
    args = parser.parse_args()
    files = []
    for i in range(PHOTOS):
        ok, jpeg = cv2.imencode(".jpg", calibration_photo(i)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            raise SystemExit(f"OpenCV could not encode calibration photo {i} as JPEG; nothing was written")
        files.append(jpeg.ravel())
    np.savez(args.out, jpeg=np.concatenate(files), ends=np.cumsum([len(f) for f in files]))
    print(f"{args.out}: {PHOTOS} photos, {args.out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
