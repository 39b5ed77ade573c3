"""A photo or mask file as arrays: EXIF orientation applied, any mode (16-bit, float, palette)
mapped to 8-bit RGB, the alpha channel kept when it says something, decompression bombs refused
before decoding. What a query, a mask file and training's photos are read with.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ibsr.errors import IbsrError

# Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 80_000_000


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
    check_not_empty(mask, path, "mask is empty (no pixel above 127); give a mask that marks the object")
    return mask


def check_not_empty(mask: np.ndarray, path, message: str) -> None:
    """A mask that marks no pixel is the user's error, named with its file."""
    if not mask.any():
        raise IbsrError(message, path)
