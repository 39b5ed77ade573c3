"""Prefilters: which shapes each query's exact rerank scores (DESIGN.md "Search"). One module per
prefilter, each registering its `--prefilter` name (`registry.py`); importing the package imports
every module in it, so a new prefilter is one new file here, found without being listed anywhere.
A prefilter returns candidate sets (`candidates.py`) that rerank themselves."""

import importlib
import pkgutil

from ibsr.searcher.prefilters.candidates import AllShapes, CandidateSet, PerQueryRows, SharedRows
from ibsr.searcher.prefilters.lookup import ShapeLookup
from ibsr.searcher.prefilters.registry import (Prefilter, described_prefilters, get_prefilter, prefilter_help,
                                               prefilter_names, register)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AllShapes", "CandidateSet", "PerQueryRows", "Prefilter", "SharedRows", "ShapeLookup",
           "described_prefilters", "get_prefilter", "prefilter_help", "prefilter_names", "register"]
