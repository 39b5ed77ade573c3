"""Writing synthetic datasets: a mesh catalog and query photos with masks.

Layout under `out_dir` (what `ibsr-index build out_dir/catalog` and the evaluation read):

    catalog/<category>/<category>_<NNNN>.<fmt>   meshes (metres, +y up, front towards +z)
    catalog.jsonl                                one line per shape: id, path, params
    queries/<category>/<category>_<NNNN>_<k>.jpg query photos (JPEG)
    queries/<category>/<category>_<NNNN>_<k>_mask.png   object masks (0 / 255)
    queries.jsonl                                {"image", "mask", "shape_id", "category"}

Everything is a pure function of the seed: shape i of a category and photo k of a shape each
get their own random stream, so files are byte-identical across runs and independent of how
many shapes or photos are asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import trimesh

from ibsr.errors import IbsrError

from .photo import sample_query_photo
from .shapes import PHOTO_STREAM, SynthShape, catalog_shape, derive_rng, iter_shapes

MESH_FORMATS = ("obj", "ply", "off", "stl", "glb")


def mesh_bytes(mesh: trimesh.Trimesh, fmt: str) -> bytes:
    """Serialize without optional extras (normals, colours) that would depend on cache state."""
    if fmt not in MESH_FORMATS:
        raise IbsrError(f"unknown mesh format {fmt!r}: choose from {', '.join(MESH_FORMATS)}")
    options = {"obj": dict(include_normals=False, include_color=False, include_texture=False),
               "ply": dict(include_attributes=False)}.get(fmt, {})
    data = trimesh.exchange.export.export_mesh(mesh, None, file_type=fmt, **options)
    return data.encode() if isinstance(data, str) else data


def write_shape(shape: SynthShape, out_dir, fmt: str = "obj") -> dict:
    """Write one shape's mesh under out_dir/catalog/; return its catalog record."""
    relative = Path("catalog") / shape.category / f"{shape.name}.{fmt}"
    path = Path(out_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mesh_bytes(shape.mesh, fmt))
    return {"shape_id": shape.shape_id, "category": shape.category, "path": relative.as_posix(),
            "faces": int(len(shape.mesh.faces)), "parts": list(shape.part_names),
            "params": shape.params}


def write_catalog(out_dir, categories, shapes_per_category: int, seed: int, fmt: str = "obj",
                  progress=None) -> list[dict]:
    """Generate and write `shapes_per_category` shapes of each category; also writes
    out_dir/catalog.jsonl. `progress(shape)` is called after each shape (a tqdm update)."""
    records = []
    for shape in iter_shapes(categories, shapes_per_category, seed):
        records.append(write_shape(shape, out_dir, fmt))
        if progress is not None:
            progress(shape)
    write_jsonl(Path(out_dir) / "catalog.jsonl", records)
    return records


def write_shape_queries(shape: SynthShape, out_dir, queries_per_shape: int, seed: int,
                        size: int = 256, first: int = 0, style: str = "default") -> list[dict]:
    """Render and write photos first..first+n-1 of one shape; return their queries.jsonl records.

    Photo k of a shape is the same for every `first`, so `first` past the photos used in
    training gives new photos of the training shapes. `style`: the photo style (see
    `ibsr.synth.photo.STYLES`; "heldout" is one training never sees)."""
    out_dir = Path(out_dir)
    records = []
    for k in range(first, first + queries_per_shape):
        rng = derive_rng(seed, PHOTO_STREAM, shape.shape_id, k)
        rgb, mask, params = sample_query_photo(shape, rng, size, style=style)
        stem = Path("queries") / f"{shape.shape_id}_{k}"
        image_rel, mask_rel = stem.with_suffix(".jpg"), Path(f"{stem}_mask.png")
        (out_dir / image_rel).parent.mkdir(parents=True, exist_ok=True)
        _write_image(out_dir / image_rel, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality])
        _write_image(out_dir / mask_rel, mask.astype(np.uint8) * 255, [])
        records.append({"image": image_rel.as_posix(), "mask": mask_rel.as_posix(),
                        "shape_id": shape.shape_id, "category": shape.category})
    return records


def write_catalog_shape(category: str, index: int, out_dir, seed: int, fmt: str = "obj",
                        queries_per_shape: int = 0, size: int = 256, first_photo: int = 0,
                        photo_style: str = "default") -> tuple[dict, list[dict]]:
    """Generate shape `index` of `category` and write its mesh and photos: (catalog record,
    queries.jsonl records). A pure function of its arguments, so shapes can be written by
    parallel worker processes in any order."""
    shape = catalog_shape(category, index, seed)
    return (write_shape(shape, out_dir, fmt),
            write_shape_queries(shape, out_dir, queries_per_shape, seed, size, first=first_photo, style=photo_style))


def write_queries(out_dir, shapes, queries_per_shape: int, seed: int, size: int = 256,
                  progress=None, style: str = "default") -> list[dict]:
    """Write `queries_per_shape` photos of each shape and out_dir/queries.jsonl (paths in it
    are relative to out_dir)."""
    records = []
    for shape in shapes:
        records.extend(write_shape_queries(shape, out_dir, queries_per_shape, seed, size, style=style))
        if progress is not None:
            progress(shape)
    write_jsonl(Path(out_dir) / "queries.jsonl", records)
    return records


def _write_image(path: Path, image: np.ndarray, options: list) -> None:
    # imencode + write_bytes rather than imwrite: an error names the file instead of returning False
    ok, data = cv2.imencode(path.suffix, image, options)
    if not ok:
        raise IbsrError("could not encode image", path)
    path.write_bytes(data.tobytes())


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
