"""Procedural furniture catalogs and query photos for demos, tests and benchmarks.

    shape = make_shape("chair", np.random.default_rng(0))     # SynthShape: mesh + part labels
    rgb, mask = render_query_photo(shape, np.random.default_rng(1))
    write_catalog("data/demo", ["chair", "table"], 50, seed=7)  # data/demo/catalog/...
    write_queries("data/demo", iter_shapes(["chair", "table"], 50, 7), 4, seed=7)
"""

from .catalog import MESH_FORMATS, write_catalog, write_queries, write_shape, write_shape_queries
from .photo import PhotoParams, render_photo, render_query_photo, sample_photo_params
from .shapes import CATEGORIES, SynthShape, catalog_shape, iter_shapes, make_shape

__all__ = [
    "CATEGORIES", "MESH_FORMATS", "PhotoParams", "SynthShape", "catalog_shape", "iter_shapes",
    "make_shape", "render_photo", "render_query_photo", "sample_photo_params", "write_catalog",
    "write_queries", "write_shape", "write_shape_queries",
]
