"""Synthetic shapes: `make_shape(category, rng)` and the seeding that makes catalogs reproducible."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import trimesh

from ibsr.errors import IbsrError

from .furniture import GENERATORS

CATEGORIES = tuple(GENERATORS)

# Separate random streams for shapes and for query photos, so adding photos never changes
# the shapes and the shape count never changes any individual shape.
SHAPE_STREAM = 1
PHOTO_STREAM = 2


@dataclass
class SynthShape:
    """A generated shape: the mesh (metres, +y up, floor at y=0, front towards +z), one part
    index per face into `part_names`, and the style/proportion draws in `params`."""

    category: str
    name: str
    mesh: trimesh.Trimesh
    face_parts: np.ndarray
    part_names: tuple[str, ...]
    params: dict = field(default_factory=dict)

    @property
    def shape_id(self) -> str:
        """`<category>/<file stem>`: the id the indexer gives the written mesh."""
        return f"{self.category}/{self.name}"


def check_categories(categories) -> list[str]:
    categories = [c.strip() for c in categories if c.strip()]
    unknown = [c for c in categories if c not in GENERATORS]
    if unknown:
        raise IbsrError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                        f"{', '.join(unknown)}: choose from {', '.join(CATEGORIES)}")
    if not categories:
        raise IbsrError("no categories given")
    return categories


def derive_rng(seed: int, stream: int, *keys) -> np.random.Generator:
    """A generator that depends only on (seed, stream, keys): strings are hashed with CRC-32
    (stable across runs and platforms, unlike `hash`)."""
    words = [int(seed) & 0xFFFFFFFF, stream]
    for key in keys:
        words.append(zlib.crc32(key.encode()) if isinstance(key, str) else int(key))
    return np.random.default_rng(np.random.SeedSequence(words))


def shape_name(category: str, index: int) -> str:
    return f"{category}_{index:04d}"


def make_shape(category: str, rng: np.random.Generator, name: str | None = None) -> SynthShape:
    """Draw one random instance of `category` ("chair", "table", ...)."""
    check_categories([category])
    parts, params = GENERATORS[category](rng)
    mesh, face_parts, part_names = parts.build()
    return SynthShape(category, name or category, mesh, face_parts, part_names, params)


def catalog_shape(category: str, index: int, seed: int) -> SynthShape:
    """Shape `index` of `category` in the catalog of `seed`: independent of how many are made."""
    rng = derive_rng(seed, SHAPE_STREAM, category, index)
    return make_shape(category, rng, shape_name(category, index))


def iter_shapes(categories, shapes_per_category: int, seed: int):
    """All catalog shapes, category by category."""
    for category in check_categories(categories):
        for index in range(shapes_per_category):
            yield catalog_shape(category, index, seed)
