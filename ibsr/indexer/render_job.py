"""One shape's CPU work for the index build: load, normalize, render, thumbnail.

Kept free of torch and LanceDB so that render workers start fast and can run anywhere
(local processes, Ray tasks). Returns a plain dict: the shape's `ShapeEntry` (what the index
writer stores of it beside its views), its views and the time taken; failures come back as
data (`{"path": ..., "error": ...}`) so one bad mesh never stops the build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import montage, render_views
from ibsr.index.layout import ShapeEntry

THUMBNAIL_TILE = 64


@dataclass(frozen=True)
class RenderJob:
    shape_id: str
    category: str
    path: str
    mesh_hash: str
    up_axis: str
    size: int


def render_shape(job: RenderJob) -> dict:
    started = time.perf_counter()
    try:
        mesh = load_mesh(job.path, up_axis=job.up_axis)
        views = render_views(mesh, job.size)
    except IbsrError as exc:
        return {"path": job.path, "error": exc.message}
    except Exception as exc:  # a renderer crash on one odd mesh must not stop the build
        return {"path": job.path, "error": f"render failed ({type(exc).__name__}: {exc})"}
    ok, png = cv2.imencode(".png", montage(views, cols=4, tile=THUMBNAIL_TILE))
    return {
        "shape": ShapeEntry(job.shape_id, job.category, job.path, job.mesh_hash, png.tobytes()),
        "views": views,
        "render_seconds": time.perf_counter() - started,
    }
