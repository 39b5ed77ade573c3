"""The object mask of a photo that has neither mask file nor alpha channel: the learned mask
network when it is installed (`mask_model.py`), GrabCut from the image border otherwise; and the
mask of the object inside a `Box` (`mask_in_box`), whoever drew the box.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ibsr.errors import IbsrError
from ibsr.photos.box import Box, box_window
from ibsr.photos.image import check_not_empty

GRABCUT_BORDER = 0.05  # fraction of each side assumed to be background
GRABCUT_ITERATIONS = 5
# GrabCut's cost grows with the pixel count (a phone photo at full size would take about a
# minute): it runs on a copy whose long side is at most this, and its mask is scaled back, at
# much the same IoU (benchmarks/RESULTS.md, "Automatic masks").
GRABCUT_SIDE = 192
# Automatic mask methods: "auto" = the mask network when ibsr/model/weights/mask.pt (or the
# given weights) exists, else GrabCut; "model" = the network (an error without it); "grabcut".
MASK_METHODS = ("auto", "model", "grabcut")
# A network mask covering less of the photo than this is a failure (nothing found, or specks):
# GrabCut takes over and the query says "grabcut-fallback".
MIN_MODEL_MASK_FRACTION = 0.005
# With a box, the automatic mask looks at the box plus this fraction of its size on every side
# (within the photo) and keeps what lies in the box: GrabCut takes its input's border for
# background, so on the bare box it cut off the edges of an object the box was drawn tight around
# (benchmarks/RESULTS.md, "The box's context band").
BOX_MASK_CONTEXT = 0.1


def mask_in_box(rgb: np.ndarray, box: Box, given: np.ndarray | None = None, source: str | None = None,
                method: str = "auto", weights: str | Path | None = None, path=None) -> tuple[np.ndarray, str]:
    """(mask, source) of the object inside `box`: pixels outside it are never object.

    A given mask (file or alpha; `source` says which) is cut to the box. Without one, the
    automatic mask runs on the box and a thin band around it (`BOX_MASK_CONTEXT`): the photo's
    other objects stay out of its view, and the band, not the object's own edges, is what GrabCut
    takes for background. Whoever picks the box, the user or a detector, comes through here."""
    height, width = rgb.shape[:2]
    box = box.check(width, height, path)  # idempotent; a detector's float box gets whole pixels here
    rows, cols = box_window(box)
    mask = np.zeros((height, width), bool)
    if given is not None:
        mask[rows, cols] = given[rows, cols]
        what = "mask file" if source == "file" else "alpha channel"
        check_not_empty(mask, path, f"the {what} marks no pixel inside box {box} of the {width}x{height} image; "
                                    "draw the box around the object it marks, or give no box")
        return mask, source
    around = box.grown(BOX_MASK_CONTEXT).check(width, height)
    near_rows, near_cols = box_window(around)
    near = np.zeros_like(mask)
    near[near_rows, near_cols], source = automatic_mask(np.ascontiguousarray(rgb[near_rows, near_cols]), method,
                                                        weights)
    mask[rows, cols] = near[rows, cols]
    return mask, source


def check_mask_method(method: str) -> None:
    if method not in MASK_METHODS:
        raise IbsrError(f"unknown mask method {method!r}; choose one of {', '.join(MASK_METHODS)}")


def automatic_mask(rgb: np.ndarray, method: str = "auto", weights: str | Path | None = None) -> tuple[np.ndarray, str]:
    """(mask, source) of a photo that has neither mask file nor alpha channel.

    "auto" uses the mask network when its weights exist (`weights`, default the shipped
    mask.pt), "model" requires them; both fall back to GrabCut when the network's mask is empty
    or tiny ("grabcut-fallback"), and take the whole photo as the object when the network is
    less certain of its mask than its `certainty_floor` ("whole-photo"): on photos unlike its
    training ones it marks a fragment, and the crop around a fragment cuts the object away.
    "grabcut", or "auto" without weights, is GrabCut.
    """
    check_mask_method(method)
    if method != "grabcut":
        from ibsr.photos import mask_model  # torch and the network only when they are used

        model = mask_model.load_mask_model(weights, required=method == "model" or weights is not None)
        if model is not None:
            mask, certainty = mask_model.predict_mask_and_certainty(model, rgb)
            if mask.mean() < MIN_MODEL_MASK_FRACTION:
                return grabcut_mask(rgb), "grabcut-fallback"
            if certainty < model.config.certainty_floor:
                return np.ones_like(mask), "whole-photo"
            return mask, "model"
    return grabcut_mask(rgb), "grabcut"


def grabcut_mask(rgb: np.ndarray, max_side: int | None = GRABCUT_SIDE) -> np.ndarray:
    """OpenCV GrabCut seeded with the image border as background, on the image shrunk to
    `max_side` (None = full size); the mask comes back at the image's size.

    Falls back to the whole frame when GrabCut finds nothing (a close-up of the object).
    """
    h, w = rgb.shape[:2]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(h, w))
    if scale < 1.0:
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        mask = grabcut_mask(small, None).astype(np.uint8) * 255
        return cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) >= 128
    border_x, border_y = max(1, int(w * GRABCUT_BORDER)), max(1, int(h * GRABCUT_BORDER))
    if w - 2 * border_x < 2 or h - 2 * border_y < 2:
        return np.ones((h, w), bool)
    labels = np.zeros((h, w), np.uint8)
    rect = (border_x, border_y, w - 2 * border_x, h - 2 * border_y)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means: same image, same mask
    cv2.grabCut(bgr, labels, rect, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return mask if mask.any() else np.ones((h, w), bool)
