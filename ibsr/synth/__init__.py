"""Procedural catalogs (furniture and other everyday objects) and query photos for demos,
tests and benchmarks. `CATEGORIES` lists every category; `GROUPS` names sets of them
("all", "furniture", "objects", ...) that `check_categories` expands.

    shape = make_shape("chair", np.random.default_rng(0))     # SynthShape: mesh + part labels
    rgb, mask = render_query_photo(shape, np.random.default_rng(1))   # style="heldout": an unseen look
    mine = shape_from_mesh(trimesh.load("my.obj", force="mesh"), "lamp", "my")  # any mesh, one part
    write_catalog("data/demo", ["chair", "table"], 50, seed=7)  # data/demo/catalog/...
    write_queries("data/demo", iter_shapes(["chair", "table"], 50, 7), 4, seed=7)
"""

from .catalog import MESH_FORMATS, write_catalog, write_queries, write_shape, write_shape_queries
from .photo import STYLES, PhotoParams, render_photo, render_query_photo, sample_photo_params
from .shapes import (CATEGORIES, FURNITURE, GROUPS, OBJECTS, SynthShape, catalog_shape, check_categories,
                     iter_shapes, make_shape, shape_from_mesh)

__all__ = [
    "CATEGORIES", "FURNITURE", "GROUPS", "MESH_FORMATS", "OBJECTS", "PhotoParams", "STYLES", "SynthShape",
    "catalog_shape", "check_categories", "iter_shapes", "make_shape", "render_photo",
    "render_query_photo", "sample_photo_params", "write_catalog", "write_queries", "write_shape",
    "shape_from_mesh", "write_shape_queries",
]
