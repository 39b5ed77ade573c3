"""Catalog in, index out: `Indexer` is the entry point."""

from ibsr.indexer.build import BuildReport, Indexer
from ibsr.indexer.discover import CatalogEntry, discover
from ibsr.indexer.store import ShapeReader, resolve_index_dir

__all__ = ["BuildReport", "CatalogEntry", "Indexer", "ShapeReader", "discover", "resolve_index_dir"]
