"""The networks' input scaling: uint8 pixels (photo RGB, masks, gray renderings) to float32 in
[-1, 1], pixel / 127.5 - 1, as the authors feed them. The index build, the searcher's queries
and mask network, and training's un-augmented inputs all scale through `scale_pixels`, so the
same pixels are the same numbers wherever they enter a network.
"""

from __future__ import annotations

import numpy as np


def scale_pixels(pixels):
    """uint8 pixels -> float32 inputs in [-1, 1]: pixel / 127.5 - 1.

    A numpy array gives a new float32 array. A torch tensor is converted by `.float()` where it
    lies (move it to its device first) and scaled in place: a float32 tensor is itself scaled
    and returned."""
    if isinstance(pixels, np.ndarray):
        return pixels.astype(np.float32) / 127.5 - 1.0
    return pixels.float().div_(127.5).sub_(1.0)
