"""Synthetic photos of any mesh file (a user's own catalog), for `ibsr-train adapt`.

`write_mesh_photos(job)` loads one catalog mesh exactly as the index build does
(`ibsr.geometry.mesh.load_mesh`: cleaned, normalized, the catalog's up axis), wraps it as a
one-part `SynthShape` (`shape_from_mesh`) and writes photos k = 0..count-1 with
`write_shape_queries`, the same photo machinery (materials, rooms, lights, occluders, camera,
JPEG) as `ibsr-data synth`. Photo k of a shape is a pure function of (seed, shape, k).

Files, under `job.folder`:

    queries/<category>/<name>-<hash>_<k>.jpg        photo k
    queries/<category>/<name>-<hash>_<k>_mask.png   its object mask (0 / 255)
    done/<category>/<name>-<hash>.json              written last: what was made, and from what

Names are the shape id made safe for a file system (manifest ids may hold any character)
plus 8 hex digits of its SHA-1, so two ids never share files. A shape whose `done` record
matches (mesh hash, seed, size, up axis) and holds enough photos is skipped, so a killed run
rewrites at most the shapes in flight; asking for more photos later renders only the new ones.

Kept free of torch (like `ibsr.indexer.render_job`), so worker processes start fast.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import trimesh
from tqdm import tqdm

from ibsr.cpus import process_pool
from ibsr.errors import IbsrError
from ibsr.files import atomic_write
from ibsr.geometry.mesh import file_hash, load_mesh

from .catalog import write_jsonl, write_shape_queries
from .shapes import shape_from_mesh

PHOTOS_VERSION = 1
RECORD_DEFAULTS = {"style": "default", "front_azimuth": 0.0}  # what records older than these keys were made with


@dataclass(frozen=True)
class PhotoJob:
    shape_id: str
    category: str
    path: str  # the mesh file
    mesh_hash: str  # SHA-256 of its bytes (`ibsr.geometry.mesh.file_hash`)
    up_axis: str
    seed: int
    size: int  # photo side, px
    count: int  # photos 0..count-1
    folder: str
    style: str = "default"  # the photo style (`ibsr.synth.photo.STYLES`)
    front_azimuth: float = 0.0  # where the mesh's front faces (degrees about +y; 0 = +z, 180 = -z)

    @property
    def safe_category(self) -> str:
        return _safe(self.category)

    @property
    def safe_name(self) -> str:
        digest = hashlib.sha1(self.shape_id.encode()).hexdigest()[:8]
        return f"{_safe(self.shape_id.rsplit('/', 1)[-1])}-{digest}"

    @property
    def done_file(self) -> Path:
        return Path(self.folder) / "done" / self.safe_category / f"{self.safe_name}.json"

    def key(self) -> dict:
        """What the photos depend on: a change of any of these makes them again."""
        return {"version": PHOTOS_VERSION, "mesh_hash": self.mesh_hash, "seed": self.seed, "size": self.size,
                "up_axis": self.up_axis, "style": self.style, "front_azimuth": self.front_azimuth}


def write_mesh_photos(job: PhotoJob) -> dict:
    """Make (or find) photos 0..count-1 of one mesh. Returns {"shape_id", "photos": [(image,
    mask), ...]} with paths relative to `job.folder`, or {"shape_id", "path", "error"} for a
    mesh that cannot be loaded or photographed (one bad mesh never stops the run)."""
    have = _photos_done(job)
    if have < job.count:
        try:
            mesh = load_mesh(Path(job.path), up_axis=job.up_axis)
            if job.front_azimuth:  # turn the front to +z, where the photo cameras mostly stand
                mesh.apply_transform(trimesh.transformations.rotation_matrix(math.radians(-job.front_azimuth),
                                                                             [0, 1, 0]))
            # the home style gives a mesh's components their own materials (frame and cushions)
            shape = shape_from_mesh(mesh, job.safe_category, job.safe_name, split_parts=job.style == "home")
            write_shape_queries(shape, job.folder, job.count - have, job.seed, job.size, first=have, style=job.style)
        except IbsrError as exc:
            return {"shape_id": job.shape_id, "path": job.path, "error": exc.message}
        except Exception as exc:  # a renderer crash on one odd mesh must not stop the run
            return {"shape_id": job.shape_id, "path": job.path,
                    "error": f"photo rendering failed ({type(exc).__name__}: {exc})"}
        _write_json(job.done_file, {**job.key(), "count": job.count, "shape_id": job.shape_id})
    stem = f"queries/{job.safe_category}/{job.safe_name}"
    return {"shape_id": job.shape_id,
            "photos": [(f"{stem}_{k}.jpg", f"{stem}_{k}_mask.png") for k in range(job.count)]}


def photograph_catalog(entries, folder, count: int, seed: int, size: int, up_axis: str, workers: int = 0,
                       progress: bool = True, style: str = "default", per_category: int = 0,
                       front_azimuth: float = 0.0) -> tuple[list, list[dict]]:
    """Photos 0..count-1 of every catalog entry under `folder` (those already made are kept).

    `per_category` > 0 balances the categories: a mesh of a category with n meshes gets
    max(count, ceil(per_category / n)) photos, so a training batch (drawn uniformly over photos)
    sees the rare categories about as often as the common ones.

    Returns (done, skipped): done = [(PhotoJob, [(image, mask), ...])] with paths relative to
    `folder`; skipped = [{"path", "reason"}] for meshes that cannot be read or photographed,
    each also reported above the progress bar."""
    jobs, skipped = [], []
    sizes = Counter(e.category for e in entries)
    for e in entries:
        try:
            digest = file_hash(e.path)
        except OSError as exc:
            skipped.append(_skip(str(e.path), f"unreadable ({exc.strerror})"))
            continue
        photos = max(count, math.ceil(per_category / sizes[e.category])) if per_category else count
        jobs.append(PhotoJob(e.shape_id, e.category, str(Path(e.path).resolve()), digest, up_axis, seed, size,
                             photos, str(folder), style, front_azimuth))
    done = []
    with process_pool(min(workers, len(jobs)) if len(jobs) > 1 else 0) as pool:
        results = pool.map(write_mesh_photos, jobs) if pool else map(write_mesh_photos, jobs)
        for job, result in tqdm(zip(jobs, results), total=len(jobs), unit="shape", file=sys.stderr,
                                desc="photos", disable=not progress):
            if "error" in result:
                skipped.append(_skip(result["path"], result["error"]))
            else:
                done.append((job, result["photos"]))
    return done, skipped


def write_dataset(folder, done: list, photos_of=lambda photos: photos, photos_dir: str = "photos") -> int:
    """A training/evaluation dataset folder (`catalog.jsonl` + `queries.jsonl`, what
    `ibsr-train` and `ibsr-eval` read) from `photograph_catalog`'s `done`; `photos_of` picks
    which photos of a shape to list, `photos_dir` is where they lie relative to `folder`.
    Returns the number of photos listed."""
    folder = Path(folder)
    catalog = [{"shape_id": job.shape_id, "category": job.category, "path": job.path} for job, _ in done]
    queries = [{"image": f"{photos_dir}/{image}", "mask": f"{photos_dir}/{mask}", "shape_id": job.shape_id,
                "category": job.category}
               for job, photos in done for image, mask in photos_of(photos)]
    write_jsonl(folder / "catalog.jsonl", catalog)
    write_jsonl(folder / "queries.jsonl", queries)
    return len(queries)


def _skip(path: str, reason: str) -> dict:
    tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)  # above the progress bar, not inside it
    return {"path": path, "reason": reason}


def _photos_done(job: PhotoJob) -> int:
    """How many photos (0..n-1) of this shape are already written for the same inputs."""
    try:
        done = json.loads(job.done_file.read_text())
    except (OSError, ValueError):
        return 0
    if not isinstance(done, dict):
        return 0
    done = {**RECORD_DEFAULTS, **done}
    if any(done.get(k) != v for k, v in job.key().items()):
        return 0
    return int(done.get("count", 0))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "shape"


def _write_json(path: Path, data: dict) -> None:
    """Atomic: the record appears only once every photo it lists is on disk."""
    atomic_write(path, json.dumps(data, sort_keys=True), mode=0o600)  # 0o600: a private file (ibsr.files)

