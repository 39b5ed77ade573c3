"""Turn a query photo into the query encoder's 4-channel input.

load (EXIF orientation, any mode, 16-bit) -> mask (given file, alpha channel, else automatic:
the learned mask network when it is installed, GrabCut from the image border otherwise) -> crop
to the mask's box with a margin, pad to a square -> resize -> RGB and mask scaled to [-1, 1], as
the authors feed them.

A `Box` (the user's rectangle around one object of a photo that holds several) restricts all of
it: the automatic mask is computed on the box's part of the photo only, a given mask is cut to
the box, and the crop takes no pixel outside the box (`mask_in_box`, `box_window`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ibsr.errors import IbsrError

# Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 80_000_000
CROP_MARGIN = 0.1  # fraction of the mask box added on every side
GRABCUT_BORDER = 0.05  # fraction of each side assumed to be background
GRABCUT_ITERATIONS = 5
# GrabCut's cost grows with the pixel count (~0.37 s at 256 x 256 here, a minute for a phone
# photo): it runs on a copy whose long side is at most this, and its mask is scaled back.
GRABCUT_SIDE = 192
# Automatic mask methods: "auto" = the mask network when ibsr/model/weights/mask.pt (or the
# given weights) exists, else GrabCut; "model" = the network (an error without it); "grabcut".
MASK_METHODS = ("auto", "model", "grabcut")
# A network mask covering less of the photo than this is a failure (nothing found, or specks):
# GrabCut takes over and the query says "grabcut-fallback".
MIN_MODEL_MASK_FRACTION = 0.005
# With a box, the automatic mask looks at the box plus this fraction of its size on every side
# (within the photo) and keeps what lies in the box: GrabCut takes its input's border for
# background, so on the bare box it cut off the edges of an object the box was drawn tight around.
# Boxes = the true masks' bounding boxes, 30 photos of benchmarks/generalization.py --seed 41's
# real-rendered set: mean IoU 0.50 -> 0.76 (GrabCut), 0.83 -> 0.88 (network); 15% looser boxes
# changed by under 0.01.
BOX_MASK_CONTEXT = 0.1


BOX_FORMAT = "X0,Y0,X1,Y1"


@dataclass(frozen=True)
class Box:
    """A rectangle of a photo that holds the object, in pixels of the upright photo (after EXIF
    orientation, the frame of a mask file and of what viewers and browsers show), at full
    resolution: x0 <= x < x1, y0 <= y < y1, so 0,0,W,H is the whole W x H photo.

    Built only finite and non-empty (x0 < x1, y0 < y1): a bad box fails before any photo is
    decoded. `check` fits it to one photo."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self):
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) for v in values):
            raise IbsrError(f"box {self}: coordinates must be finite numbers; give {BOX_FORMAT} in pixels")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise IbsrError(f"box {self} is empty or inverted: need x0 < x1 and y0 < y1; give {BOX_FORMAT}, "
                            "the left-top then the right-bottom corner, in pixels")

    @classmethod
    def parse(cls, text: str) -> "Box":
        """A box from "x0,y0,x1,y1" (integers or floats)."""
        parts = str(text).split(",")
        try:
            if len(parts) != 4:
                raise ValueError
            values = [float(part) for part in parts]
        except ValueError:
            raise IbsrError(f"box {text!r} is not four numbers; give {BOX_FORMAT} in pixels, e.g. 10,20,300,240") \
                from None
        return cls(*values)

    @classmethod
    def from_value(cls, value) -> "Box":
        """A box from a JSON value: [x0, y0, x1, y1] or the text "x0,y0,x1,y1"."""
        if isinstance(value, str):
            return cls.parse(value)
        numbers = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not numbers or len(value) != 4:
            raise IbsrError(f"box {value!r} is not four numbers; give [x0, y0, x1, y1] in pixels")
        return cls(*(float(v) for v in value))

    def check(self, width: int, height: int, path=None) -> "Box":
        """This box on a width x height photo: clipped to the photo and widened to whole pixels
        (what is searched, and echoed in results). A box with no pixel in the photo is an error."""
        x0, y0 = max(self.x0, 0.0), max(self.y0, 0.0)
        x1, y1 = min(self.x1, float(width)), min(self.y1, float(height))
        if not (x0 < x1 and y0 < y1):
            raise IbsrError(f"box {self} lies outside the {width}x{height} image; give {BOX_FORMAT} within "
                            f"0,0,{width},{height} (pixels of the upright photo)", path)
        return Box(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))

    def grown(self, fraction: float) -> "Box":
        """This box with `fraction` of its width and height added on every side."""
        dx, dy = (self.x1 - self.x0) * fraction, (self.y1 - self.y0) * fraction
        return Box(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy)

    def to_list(self) -> list:
        """[x0, y0, x1, y1], whole numbers as ints (JSON answers)."""
        return [_number(v) for v in (self.x0, self.y0, self.x1, self.y1)]

    def __str__(self) -> str:  # as typed on a command line: 10,20,300.5,240
        return ",".join(str(v) for v in self.to_list())


def _number(value: float) -> int | float:
    value = float(value)
    return int(value) if math.isfinite(value) and value.is_integer() else value


@dataclass
class Query:
    path: str
    rgb: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W bool
    mask_source: str  # "file", "alpha", "model", "grabcut", or "grabcut-fallback"
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
        _check_not_empty(given, path, "alpha channel is fully transparent; pass --mask")
    if box is not None:
        box = box.check(rgb.shape[1], rgb.shape[0], path)
        mask, source = mask_in_box(rgb, box, given, source, mask_method, mask_weights, path)
    elif given is not None:
        mask = given
    else:
        mask, source = automatic_mask(rgb, mask_method, mask_weights)
    return Query(str(path), rgb, mask, source, box)


def box_window(box: Box | None) -> tuple[slice, slice]:
    """Row and column slices of a checked box (everything for None)."""
    if box is None:
        return slice(None), slice(None)
    return slice(int(box.y0), int(box.y1)), slice(int(box.x0), int(box.x1))


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
        _check_not_empty(mask, path, f"the {what} marks no pixel inside box {box} of the {width}x{height} image; "
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
    or tiny ("grabcut-fallback"). "grabcut", or "auto" without weights, is GrabCut.
    """
    check_mask_method(method)
    if method != "grabcut":
        from ibsr.searcher import mask_model  # torch and the network only when they are used

        model = mask_model.load_mask_model(weights, required=method == "model" or weights is not None)
        if model is not None:
            mask = mask_model.predict_mask(model, rgb)
            if mask.mean() >= MIN_MODEL_MASK_FRACTION:
                return mask, "model"
            return grabcut_mask(rgb), "grabcut-fallback"
    return grabcut_mask(rgb), "grabcut"


def load_image(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 (EXIF-rotated) and the alpha channel if the image has a useful one."""
    path = Path(path)
    image = _open(path)
    try:
        image = ImageOps.exif_transpose(image)
        alpha = _alpha(image)
        rgb = np.asarray(_to_rgb8(image))
    except (OSError, ValueError, SyntaxError) as exc:
        raise IbsrError(f"cannot decode image ({exc}); is the file truncated?", path) from None
    return rgb, alpha


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise IbsrError("query image not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise IbsrError(f"image is {width}x{height}, over the {MAX_PIXELS:,} pixel limit; downscale it", path)
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise IbsrError("not an image ibsr can read (JPEG, PNG, WebP, ...); or it is too large to decode safely",
                        path) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise IbsrError(f"cannot decode image ({exc}); is the file truncated?", path) from None
    return image


def _alpha(image: Image.Image) -> np.ndarray | None:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA"):
        return None
    alpha = np.asarray(image.getchannel("A"))
    return None if alpha.min() == 255 else alpha  # fully opaque alpha says nothing


def _to_rgb8(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit (or 32-bit) grayscale: map the 16-bit range onto 8 bits.
        data = np.asarray(image, dtype=np.float64)
        scale = 255.0 if image.mode == "F" and data.max() <= 1.0 else 1.0 / 257.0
        image = Image.fromarray(np.clip(data * scale, 0, 255).round().astype(np.uint8))
    return image.convert("RGB")


def load_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask file of the image's size; nonzero (after EXIF rotation) means object."""
    image = _open(Path(path))
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA"):
        mask = np.asarray(image.getchannel("A")) > 127
    else:
        mask = np.asarray(image.convert("L")) > 127
    if mask.shape != tuple(shape):
        raise IbsrError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}; "
                        "give a mask of the image's size", path)
    _check_not_empty(mask, path, "mask is empty (no pixel above 127); give a mask that marks the object")
    return mask


def _check_not_empty(mask: np.ndarray, path, message: str) -> None:
    if not mask.any():
        raise IbsrError(message, path)


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


def query_tensor(query: Query, size: int) -> np.ndarray:
    """4 x size x size float32 in [-1, 1]: RGB + mask, cropped around the object (and within the
    query's box: its margin shows no other object, zero padding where the box ends)."""
    rows, cols = box_window(query.box)
    rgb, mask = crop_to_mask(query.rgb[rows, cols], query.mask[rows, cols])
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_AREA)
    from ibsr.model.inputs import scale_pixels  # ibsr.model imports torch, which loading a query does without

    return scale_pixels(np.concatenate([rgb.transpose(2, 0, 1), mask[None]], axis=0))


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
