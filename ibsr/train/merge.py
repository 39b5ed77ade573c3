"""Merging dataset folders into one, so a training run sees several worlds at once.

A dataset folder is `catalog/` or `catalog.jsonl` plus `queries.jsonl` (what `ibsr-data synth`
and `ibsr-data photos` write). The merge writes a manifest and a queries file whose paths are
absolute, so nothing is copied and the sources stay where they are.
"""

from __future__ import annotations

from pathlib import Path

from ibsr.errors import IbsrError
from ibsr.eval.queries import read_queries
from ibsr.indexer.discover import discover
from ibsr.train.data import dataset_paths

from ibsr.synth.catalog import write_jsonl


def merge_datasets(folders, out, max_per_shape: int | None = None) -> tuple[int, int]:
    """Write `out/catalog.jsonl` and `out/queries.jsonl` from the dataset folders; returns
    (shapes, photos). A shape id in two datasets must name the same mesh file (two photo sets of
    one catalog, e.g. two photo styles: the shape is listed once with the photos of both); the
    same id for two different meshes is an error (rename, or leave one out).

    max_per_shape: take at most that many photos of each shape from each folder (the first in
    its file order), so that joining two photo styles of a catalog can keep its share of the
    training photos instead of doubling it."""
    if max_per_shape is not None and max_per_shape < 1:
        raise IbsrError(f"--max-per-shape must be at least 1 (got {max_per_shape})")
    catalog, queries, owner = [], [], {}
    for folder in folders:
        shapes_file, queries_file = dataset_paths(folder)
        for e in discover(shapes_file):
            path = str(Path(e.path).resolve())
            if e.shape_id in owner:
                if owner[e.shape_id][1] != (path, e.category):
                    raise IbsrError(f"shape id {e.shape_id!r} is in both {owner[e.shape_id][0]} and {folder} "
                                    "for different meshes; merge datasets with distinct shape ids", folder)
                continue
            owner[e.shape_id] = (folder, (path, e.category))
            catalog.append({"shape_id": e.shape_id, "category": e.category, "path": path})
        taken: dict[str, int] = {}  # this folder's photos per shape so far
        for q in read_queries(queries_file):
            taken[q.shape_id] = taken.get(q.shape_id, 0) + 1
            if max_per_shape is not None and taken[q.shape_id] > max_per_shape:
                continue
            queries.append({"image": str(q.image.resolve()), "mask": str(q.mask.resolve()) if q.mask else None,
                            "shape_id": q.shape_id, "category": q.category})
    out = Path(out)
    write_jsonl(out / "catalog.jsonl", catalog)
    write_jsonl(out / "queries.jsonl", [{k: v for k, v in q.items() if v is not None} for q in queries])
    return len(catalog), len(queries)
