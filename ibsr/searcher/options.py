"""`SearchOptions`: what a search needs besides the photos, checked once when made.

The Searcher's methods, the evaluation, the command lines and the service all take one; a
prefilter's own settings (`candidates`, `neighbors`) are checked by that prefilter, and only
when it runs (a given `category` replaces the prefilter). Whether `topk` fits the index is the
Searcher's check: it depends on the index.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ibsr.errors import IbsrError
from ibsr.searcher.prefilters import get_prefilter

DEFAULT_TOPK = 10
DEFAULT_PREFILTER = "category"
DEFAULT_CANDIDATES = 1000  # --prefilter ann: shapes reranked per query
DEFAULT_NEIGHBORS = 10  # --prefilter category: nearest shapes that vote for categories


@dataclass(frozen=True)
class SearchOptions:
    topk: int = DEFAULT_TOPK  # hits per query, best first
    prefilter: str = DEFAULT_PREFILTER  # a registered prefilter's name (`ibsr.searcher.prefilters`)
    candidates: int = DEFAULT_CANDIDATES
    neighbors: int = DEFAULT_NEIGHBORS
    category: str | None = None  # only shapes of this category: no prefilter

    def __post_init__(self):
        if self.topk < 1:
            raise IbsrError(f"--topk must be at least 1 (got {self.topk})")
        prefilter = get_prefilter(self.prefilter)
        if self.category is None:
            prefilter.check(self)

    def group_key(self) -> tuple:
        """Everything but topk: searches with equal keys share their candidates, so they rerank in
        one call (with the largest topk, each result then cut to its own)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "topk")


def search_options(options: SearchOptions | None = None, **settings) -> SearchOptions:
    """`options` (default: `SearchOptions()`) with keyword settings (topk=5, prefilter="ann", ...)
    over its fields: how the Searcher's methods take either."""
    return replace(options or SearchOptions(), **settings)
