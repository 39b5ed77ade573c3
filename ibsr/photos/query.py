"""Turn a query photo into the query encoder's 4-channel input.

load (`image.py`: EXIF orientation, any mode, 16-bit) -> mask (given file, alpha channel, else
automatic: `mask.py`) -> crop to the mask's box with a margin, pad to a square -> resize -> RGB
and mask scaled to [-1, 1], as the authors feed them.

A `Box` (the user's rectangle around one object of a photo that holds several) restricts all of
it: the automatic mask is computed on the box's part of the photo only, a given mask is cut to
the box, and the crop takes no pixel outside the box (`mask_in_box`, `box_window`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ibsr.photos.box import Box, box_window
from ibsr.photos.image import check_not_empty, load_image, load_mask
from ibsr.photos.mask import automatic_mask, check_mask_method, mask_in_box
from ibsr.runtime import quantize

CROP_MARGIN = 0.1  # fraction of the mask box added on every side


@dataclass
class Query:
    path: str
    rgb: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W bool
    mask_source: str  # "file", "alpha", "model", "grabcut", "grabcut-fallback" or "whole-photo"
    box: Box | None = None  # the box searched (checked: whole pixels inside the photo); None: all of it


def load_query(path: str | Path, mask_path: str | Path | None = None, mask_method: str = "auto",
               mask_weights: str | Path | None = None, box: Box | None = None) -> Query:
    """The photo and its mask: the mask file, else the alpha channel, else `automatic_mask`;
    with a box, only inside it (`mask_in_box`)."""
    check_mask_method(mask_method)
    rgb, alpha = load_image(path)
    given, source = None, None
    if mask_path is not None:
        given, source = load_mask(mask_path, rgb.shape[:2]), "file"
    elif alpha is not None:
        given, source = alpha > 127, "alpha"
        check_not_empty(given, path, "alpha channel is fully transparent; pass --mask")
    if box is not None:
        box = box.check(rgb.shape[1], rgb.shape[0], path)
        mask, source = mask_in_box(rgb, box, given, source, mask_method, mask_weights, path)
    elif given is not None:
        mask = given
    else:
        mask, source = automatic_mask(rgb, mask_method, mask_weights)
    return Query(str(path), rgb, mask, source, box)


def query_tensor(query: Query, size: int) -> np.ndarray:
    """4 x size x size float32 in [-1, 1]: RGB + mask, cropped around the object (and within the
    query's box: its margin shows no other object, zero padding where the box ends)."""
    rows, cols = box_window(query.box)
    rgb, mask = crop_to_mask(query.rgb[rows, cols], query.mask[rows, cols])
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_AREA)
    from ibsr.model.inputs import scale_pixels  # ibsr.model imports torch, which loading a query does without

    return scale_pixels(np.concatenate([rgb.transpose(2, 0, 1), mask[None]], axis=0))


def calibration_inputs(size: int) -> list[np.ndarray]:
    """The int8 query encoder's calibration inputs (`ibsr.runtime.quantize`): the packaged photos
    with their exact masks, made into query tensors as a search makes them."""
    return [query_tensor(Query("calibration", rgb, mask, "file"), size)[None]
            for rgb, mask in quantize.calibration_photos()]


def crop_to_mask(rgb: np.ndarray, mask: np.ndarray, margin: float = CROP_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """The square around the mask's bounding box plus margin; outside the image is zero."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(round(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top, left = cy - side // 2, cx - side // 2
    out_rgb = np.zeros((side, side, 3), np.uint8)
    out_mask = np.zeros((side, side), bool)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, rgb.shape[0]), min(left + side, rgb.shape[1])
    out_rgb[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    out_mask[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = mask[sy0:sy1, sx0:sx1]
    return out_rgb, out_mask
