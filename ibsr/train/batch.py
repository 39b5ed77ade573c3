"""Which images and shapes a training step sees.

Step `t` of a run takes B query images: epoch `t // steps_per_epoch` is one permutation of all
images (drawn from the run's seed and the epoch number), cut into consecutive slices of B (the
last slice of an epoch wraps around to the permutation's start, so every batch has B images).
The batch's shapes are the *unique* shapes of those images, then extra distinct shapes drawn
from the rest of the catalog until there are B shapes (DESIGN.md, "Batches hold unique shapes"):
every image has exactly one positive column, and every other column is a true negative.

Everything is a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen, without storing sampler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLER_STREAM = 1
FILL_STREAM = 2
AUGMENT_STREAM = 3


def step_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, stream, keys...)."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, stream, *keys]))


@dataclass(frozen=True)
class Batch:
    images: np.ndarray  # B indices into the dataset's queries
    shapes: np.ndarray  # S <= B unique indices into the dataset's shapes (S = B when the catalog allows)
    image_shape: np.ndarray  # B indices into `shapes`: the positive of each image


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    return max(1, math.ceil(num_images / batch_size))


def epoch_images(num_images: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The B image indices of `step`."""
    per_epoch = steps_per_epoch(num_images, batch_size)
    epoch, slot = divmod(step, per_epoch)
    order = step_rng(seed, SAMPLER_STREAM, epoch).permutation(num_images)
    positions = (slot * batch_size + np.arange(batch_size)) % num_images
    return order[positions]


def make_batch(images: np.ndarray, query_shape: np.ndarray, num_shapes: int, batch_size: int,
               rng: np.random.Generator) -> Batch:
    """The batch of `images`: their unique shapes (in order of first appearance), filled with
    distinct other catalog shapes, drawn with `rng`, up to `batch_size` shapes."""
    own = list(dict.fromkeys(int(s) for s in query_shape[images]))
    want = min(batch_size, num_shapes) - len(own)
    if want > 0:
        mask = np.ones(num_shapes, bool)
        mask[own] = False
        extra = rng.choice(np.flatnonzero(mask), size=want, replace=False)
        own.extend(int(s) for s in extra)
    shapes = np.array(own, np.int64)
    position = {s: i for i, s in enumerate(own)}
    image_shape = np.array([position[int(s)] for s in query_shape[images]], np.int64)
    return Batch(np.asarray(images, np.int64), shapes, image_shape)


def sample_batch(query_shape: np.ndarray, num_shapes: int, batch_size: int, seed: int, step: int) -> Batch:
    """Batch of training step `step` (deterministic in seed and step)."""
    images = epoch_images(len(query_shape), batch_size, seed, step)
    return make_batch(images, query_shape, num_shapes, batch_size, step_rng(seed, FILL_STREAM, step))
