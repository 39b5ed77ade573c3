"""Synthetic shapes: `make_shape(category, rng)` and the seeding that makes catalogs reproducible."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import trimesh

from ibsr.errors import IbsrError

from . import electronics, furniture, household, objects

# One registry of every category, furniture first (its order is the default one). The named
# groups let a config or a benchmark ask for "all", or train on one group and hold out another.
GENERATORS = {**furniture.GENERATORS, **household.GENERATORS, **electronics.GENERATORS,
              **objects.GENERATORS}
CATEGORIES = tuple(GENERATORS)
FURNITURE = tuple(furniture.GENERATORS)
OBJECTS = tuple(c for c in CATEGORIES if c not in FURNITURE)
# Whole categories the default model never trains on, to measure how it does on kinds of
# objects it has not seen (benchmarks/generalization.py): one of each family, some with a
# trained relative (wardrobe ~ cabinet, bathtub ~ sink), some without (guitar, airplane).
HELDOUT = ("kettle", "bathtub", "laptop", "wardrobe", "guitar", "airplane")
TRAIN = tuple(c for c in CATEGORIES if c not in HELDOUT)
GROUPS = {"all": CATEGORIES, "furniture": FURNITURE, "objects": OBJECTS, "train": TRAIN, "heldout": HELDOUT}

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
    """The category names meant by `categories`: a list (or a comma-separated string) of
    categories and group names (`GROUPS`: "all", "furniture", "objects", ...), read left to
    right; a name prefixed with "-" leaves those categories out ("all,-car,-airplane")."""
    if isinstance(categories, str):
        categories = categories.split(",")
    chosen, unknown = [], []
    for token in (c.strip() for c in categories):
        name = token.removeprefix("-")
        names = GROUPS.get(name) or ((name,) if name in GENERATORS else None)
        if names is None:
            unknown.append(name)
        elif token.startswith("-"):
            chosen = [c for c in chosen if c not in names]
        else:
            chosen += [c for c in names if c not in chosen]
    unknown = [u for u in unknown if u]
    if unknown:
        raise IbsrError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                        f"{', '.join(unknown)}: choose from {', '.join(CATEGORIES)} "
                        f"or a group ({', '.join(GROUPS)})")
    if not chosen:
        raise IbsrError("no categories given (or every one left out)")
    return chosen


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
    if category not in GENERATORS:
        check_categories([category])  # raises the "unknown category" error
        raise IbsrError(f"{category!r} is a group of categories, not one category: "
                        f"pick one of {', '.join(GROUPS[category])}")
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


PART_MIN_AREA = 0.04  # a component with less of the surface stays in the body


def mesh_parts(mesh: trimesh.Trimesh) -> tuple[np.ndarray, tuple[str, ...]]:
    """(part index per face, part names) of a one-part mesh, from its connected components.

    The largest component by area is "body"; each other one with at least PART_MIN_AREA of
    the surface is its own part, "cushion" when it is chunky (its thinnest side at least a
    sixth of its longest: seat pads, backrests) and "frame" otherwise (legs, rails, bent wood);
    small pieces join the body. At most five parts."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    areas = np.bincount(labels, weights=mesh.area_faces)
    order = [int(c) for c in np.argsort(-areas)]
    total = float(areas.sum()) or 1.0
    face_parts = np.zeros(len(mesh.faces), np.int64)
    names = ["body"]
    for component in order[1:]:
        if areas[component] < PART_MIN_AREA * total or len(names) == 5:
            break
        faces = labels == component
        extents = np.ptp(mesh.vertices[np.unique(mesh.faces[faces])], axis=0)
        names.append("cushion" if extents.min() >= extents.max() / 6 else "frame")
        face_parts[faces] = len(names) - 1
    return face_parts, tuple(names)


def shape_from_mesh(mesh: trimesh.Trimesh, category: str, name: str, split_parts: bool = False) -> SynthShape:
    """Any mesh (e.g. one of a user's catalog, loaded +y up) as a `SynthShape`, so that it can
    be photographed like a procedural shape (`render_query_photo`): every face is part 0,
    "body", or with `split_parts` its connected components are parts of their own
    (`mesh_parts`). The photo's floor is y = 0 or the mesh's lowest point,
    whichever is lower."""
    if len(mesh.faces) == 0 or not np.isfinite(np.asarray(mesh.vertices)).all():
        raise IbsrError(f"mesh of {category}/{name} has no faces or non-finite vertices: it cannot be photographed")
    copy = trimesh.Trimesh(vertices=np.asarray(mesh.vertices, dtype=np.float64).copy(),
                           faces=np.asarray(mesh.faces).copy(), process=False)
    if split_parts:
        return SynthShape(category, name, copy, *mesh_parts(copy))
    return SynthShape(category, name, copy, np.zeros(len(copy.faces), dtype=np.int64), ("body",))
