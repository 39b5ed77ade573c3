"""Catalog in, index out: `Indexer` is the entry point (the index directory itself is `ibsr.index`'s).

Names are imported on first use: render workers and `ibsr-data` import
`ibsr.indexer.render_job` without paying for torch and LanceDB.
"""

_EXPORTS = {
    "BuildReport": "ibsr.indexer.build",
    "Indexer": "ibsr.indexer.build",
    "CatalogEntry": "ibsr.indexer.discover",
    "discover": "ibsr.indexer.discover",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ibsr.indexer' has no attribute {name!r}")
