"""Training data: a catalog rendered once, query photos decoded and cropped once, both cached.

A dataset folder holds
- `catalog/` (`<category>/<name>.obj`, any layout `ibsr-index build` reads) or `catalog.jsonl`
  (a manifest), and
- `queries.jsonl`: one `{"image", "mask", "shape_id", "category"}` per line, paths relative to
  the jsonl (`mask` optional: then the alpha channel or GrabCut, exactly as `ibsr-search`).

This is what `ibsr-data synth` writes. Renderings come from `ibsr.indexer.render_job.render_shape`
(the index build's own load + normalize + render), so a training view is byte-identical to the
view the index encodes. Queries go through `ibsr.photos.query` (`load_query`, then the same
crop + resize as `query_tensor`), so an un-augmented training input *is* the search-time input.

Caches (`<cache>/renders-<key>.npz`, `<cache>/queries-<key>.npz`) are keyed by the SHA-256 of
every source file plus the render/query size, rig and up axis: editing one mesh or photo makes a
new cache, and an epoch never re-renders or re-decodes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ibsr.cpus import process_pool, usable_cpus
from ibsr.errors import IbsrError
from ibsr.files import atomic_path
from ibsr.eval.queries import read_queries
from ibsr.geometry.mesh import file_hash
from ibsr.geometry.render import DEFAULT_RIG
from ibsr.indexer.discover import discover
from ibsr.indexer.render_job import RenderJob, render_shape
from ibsr.photos.query import CROP_MARGIN, crop_to_mask, load_query

CACHE_VERSION = 1
POOL_MIN_JOBS = 256  # below this many shapes or photos, render/decode in this process


@dataclass
class Dataset:
    """One dataset in memory: N shapes' views, M query inputs, and how they relate."""

    name: str
    shape_ids: list[str]  # N, sorted
    shape_category: np.ndarray  # N int64 category index
    views: np.ndarray  # N x V x S x S uint8 grayscale renderings (the index's)
    queries: np.ndarray  # M x 4 x Q x Q uint8: RGB + mask (0/255), cropped and resized
    query_shape: np.ndarray  # M int64 index into shape_ids
    query_category: np.ndarray  # M int64 category index
    categories: list[str]  # category index -> name (shared by train and val)
    key: str = ""  # of the files' contents, sizes and rig (the caches'): equal keys, equal data

    @property
    def num_shapes(self) -> int:
        return len(self.shape_ids)

    @property
    def num_queries(self) -> int:
        return len(self.queries)


def dataset_paths(folder) -> tuple[Path, Path]:
    """(catalog folder or manifest, queries.jsonl) of a dataset folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IbsrError("dataset folder not found; make one with `ibsr-data synth --out DIR`", folder)
    catalog = folder / "catalog"
    if not catalog.is_dir():
        catalog = folder / "catalog.jsonl"
    if not catalog.exists():
        raise IbsrError("dataset folder has neither catalog/ nor catalog.jsonl", folder)
    queries = folder / "queries.jsonl"
    if not queries.is_file():
        raise IbsrError("dataset folder has no queries.jsonl (lines of image, mask, shape_id, category)", folder)
    return catalog, queries


def load_dataset(folder, render_size: int, query_size: int, cache_dir, up_axis: str = "y",
                 categories: list[str] | None = None, progress: bool = True) -> Dataset:
    """Read (from cache, or render/decode once) one dataset folder.

    `categories` fixes the category numbering (pass the training set's to a validation set);
    new categories are appended.
    """
    catalog, queries_file = dataset_paths(folder)
    entries = discover(catalog)
    records = read_queries(queries_file)
    shape_index = {e.shape_id: i for i, e in enumerate(entries)}
    for r in records:
        if r.shape_id not in shape_index:
            raise IbsrError(f"line {r.line}: query {r.image.name} names shape {r.shape_id!r}, which is not in "
                            f"the catalog {catalog}", queries_file)
    # a query without a category takes its shape's
    query_categories = [r.category or entries[shape_index[r.shape_id]].category for r in records]
    categories = list(categories or [])
    for name in sorted({e.category for e in entries} | set(query_categories)):
        if name not in categories:
            categories.append(name)
    cat_index = {c: i for i, c in enumerate(categories)}
    views, views_key = _cached_renders(entries, render_size, Path(cache_dir), up_axis, progress)
    photos, photos_key = _cached_queries([(r.image, r.mask) for r in records], query_size, Path(cache_dir),
                                         progress)
    return Dataset(
        name=str(folder),
        shape_ids=[e.shape_id for e in entries],
        shape_category=np.array([cat_index[e.category] for e in entries], np.int64),
        views=views,
        queries=photos,
        query_shape=np.array([shape_index[r.shape_id] for r in records], np.int64),
        query_category=np.array([cat_index[c] for c in query_categories], np.int64),
        categories=categories,
        key=cache_key([views_key, photos_key]),
    )


# --------------------------------------------------------------------------- renderings


def _cached_renders(entries, size: int, cache_dir: Path, up_axis: str, progress: bool) -> tuple[np.ndarray, str]:
    """(N x V x S x S uint8 views, their cache key)."""
    hashes = [file_hash(e.path) for e in entries]
    key = cache_key({"v": CACHE_VERSION, "kind": "renders", "size": size, "rig": DEFAULT_RIG.to_dict(),
                     "up_axis": up_axis, "shapes": [[e.shape_id, h] for e, h in zip(entries, hashes)]})
    path = cache_dir / f"renders-{key}.npz"
    if path.is_file():
        return np.load(path)["views"], key
    views = []
    jobs = [RenderJob(e.shape_id, e.category, str(e.path), h, up_axis, size) for e, h in zip(entries, hashes)]
    with worker_pool(len(jobs)) as pool:
        results = pool.map(render_shape, jobs, chunksize=8) if pool else map(render_shape, jobs)
        for result in tqdm(results, total=len(jobs), desc=f"rendering {len(jobs)} shapes (once)", unit="shape",
                           disable=not progress, file=sys.stderr):
            if "error" in result:
                raise IbsrError(f"cannot render a training shape: {result['error']}; fix or remove it",
                                result["path"])
            views.append(result["views"])
    views = np.stack(views)
    save_npz(path, views=views)
    return views, key


# --------------------------------------------------------------------------- queries


def query_input(rgb: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """4 x size x size uint8 (RGB, mask 0/255): `ibsr.photos.query.query_tensor` before its
    final `ibsr.model.inputs.scale_pixels` (kept uint8 to cache 4x smaller; the batch is
    scaled by it, exactly)."""
    rgb, mask = crop_to_mask(rgb, mask)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_AREA)
    return np.concatenate([rgb.transpose(2, 0, 1), mask[None]], axis=0)


def _cached_queries(files: list[tuple[Path, Path | None]], size: int, cache_dir: Path,
                    progress: bool) -> tuple[np.ndarray, str]:
    """(image, mask) files -> (M x 4 x size x size uint8, the cache key: the files' contents)."""
    key = cache_key({"v": CACHE_VERSION, "kind": "queries", "size": size, "margin": CROP_MARGIN,
                     "files": [[file_hash(i), file_hash(m) if m else None] for i, m in files]})
    path = cache_dir / f"queries-{key}.npz"
    if path.is_file():
        return np.load(path)["queries"], key
    out = np.empty((len(files), 4, size, size), np.uint8)
    decode = partial(_decode_query, size=size)
    with worker_pool(len(files)) as pool:
        inputs = pool.map(decode, files, chunksize=32) if pool else map(decode, files)
        for i, query in enumerate(tqdm(inputs, total=len(files), desc=f"decoding {len(files)} query photos (once)",
                                       unit="photo", disable=not progress, file=sys.stderr)):
            out[i] = query
    save_npz(path, queries=out)
    return out, key


def _decode_query(files: tuple[Path, Path | None], size: int) -> np.ndarray:
    query = load_query(*files)
    return query_input(query.rgb, query.mask, size)


def worker_pool(jobs: int) -> process_pool:
    """Worker processes for a large one-off job (one per CPU this process may use, at most 16);
    none (serial) for small jobs, where starting processes costs more than it saves."""
    workers = min(usable_cpus(), 16)
    return process_pool(workers if jobs >= POOL_MIN_JOBS and workers >= 2 else 0)


# --------------------------------------------------------------------------- helpers


def cache_key(obj) -> str:
    """16 hex digits of a SHA-256 over `obj` as JSON: a cache file's name from what it depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def save_npz(path: Path, **arrays) -> None:
    """Atomic write: a crash never leaves a half cache that a later run would trust."""
    with atomic_path(path, mode=0o600) as tmp, open(tmp, "wb") as f:  # 0o600: a private file (ibsr.files)
        np.savez(f, **arrays)  # an open file: savez adds ".npz" to a name that lacks it
