"""`--prefilter ann`: each query reranks its `candidates` nearest shapes by pooled vector."""

from __future__ import annotations

import numpy as np

from ibsr.errors import IbsrError
from ibsr.searcher.prefilters.candidates import PerQueryRows
from ibsr.searcher.prefilters.registry import Prefilter, register


@register("ann")
class NearestShapes(Prefilter):
    help = "reranks the --candidates nearest shapes"

    def check(self, options):
        if options.candidates < 1:
            raise IbsrError(f"--candidates must be at least 1 (got {options.candidates})")

    def candidates(self, lookup, q, options):
        return [PerQueryRows(np.arange(len(q)), lookup.nearest(q, options.candidates))]
