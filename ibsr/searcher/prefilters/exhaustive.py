"""`--prefilter none`: no prefilter, the exhaustive top k over every shape (the ground truth)."""

from __future__ import annotations

import numpy as np

from ibsr.searcher.prefilters.candidates import AllShapes
from ibsr.searcher.prefilters.registry import Prefilter, register


@register("none")
class Exhaustive(Prefilter):
    help = ("returns the exhaustive top k over all shapes, scoring only those whose score bound reaches the k-th "
            "score (or all of them in one pass when that is cheaper)")

    def candidates(self, lookup, q, options):
        return [AllShapes(np.arange(len(q)))]
