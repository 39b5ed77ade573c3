"""`--prefilter category` (the default): predict each query's categories from its `neighbors`
nearest shapes and rerank every shape of them; queries that predict the same categories share
one set, so their shapes are gathered once and reranked in one call."""

from __future__ import annotations

import numpy as np

from ibsr.errors import IbsrError
from ibsr.searcher.prefilters.candidates import SharedRows
from ibsr.searcher.prefilters.registry import Prefilter, register


@register("category")
class PredictedCategories(Prefilter):
    help = "reranks every shape of the categories of the query's nearest shapes"

    def check(self, options):
        if options.neighbors < 1:
            raise IbsrError(f"--neighbors must be at least 1 (got {options.neighbors})")

    def candidates(self, lookup, q, options):
        predicted: dict[tuple[str, ...], list[int]] = {}
        for i, rows in enumerate(lookup.nearest(q, options.neighbors)):
            predicted.setdefault(lookup.categories_of(rows), []).append(i)
        return [SharedRows(np.array(members), lookup.category_rows(key), key) for key, members in predicted.items()]
