"""Candidate generation: which shapes each query's exact rerank looks at.

Modes (DESIGN.md "Search"):
- `category` (default): predict the query's categories from its `neighbors` nearest shapes
  (FAISS on pooled vectors) and rerank every shape of those categories;
- `ann`: rerank the `candidates` nearest shapes;
- `none`: rerank every shape (the exhaustive ground truth);
- `exact`: the same top-k as `none`, scoring only the shapes whose upper bound can reach the
  k-th score (`pruned.py`; the bounds are built on first use and kept).
Queries that share a candidate set are grouped so each group is one rerank call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ibsr.errors import IbsrError
from ibsr.indexer.faiss_index import build_faiss, read_faiss, to_gpu_if_available
from ibsr.searcher.pruned import ShapeBounds

MODES = ("category", "ann", "none", "exact")


@dataclass
class CandidateGroup:
    queries: np.ndarray  # positions in the query batch
    rows: np.ndarray | None  # shape rows to rerank (shared by the group), None = all
    per_query_rows: np.ndarray | None = None  # B_g x C rows, -1 padded (ann mode)
    categories: tuple[str, ...] = ()
    pruned: bool = False  # exact mode: rows None, scored by `pruned_rerank` with `Prefilter.shape_bounds`


class Prefilter:
    """FAISS over the pooled shape vectors of one pinned snapshot."""

    def __init__(self, index_dir, shapes):
        self.categories = np.asarray(shapes.categories, dtype=object)
        self.rows_of_category = {c: np.flatnonzero(self.categories == c) for c in sorted(set(shapes.categories))}
        self.index, self.faiss_rows = self._load(index_dir, shapes)
        self._shapes, self._shape_bounds = shapes, None

    def shape_bounds(self) -> ShapeBounds:
        """The exact mode's score bounds, built from the snapshot on first use."""
        if self._shape_bounds is None:
            self._shape_bounds = ShapeBounds.build(self._shapes.views)
        return self._shape_bounds

    def _load(self, index_dir, shapes):
        """The stored index if it was built from this table version, else an exact one in memory."""
        stored = read_faiss(index_dir)
        if stored is not None and stored[1]["table_version"] == shapes.version:
            index, meta = stored
            row = {s: i for i, s in enumerate(shapes.shape_ids)}
            faiss_rows = np.array([row.get(s, -1) for s in meta["shape_ids"]], dtype=np.int64)
        else:
            index, faiss_rows = build_faiss(shapes.vectors, "Flat"), np.arange(len(shapes.shape_ids))
        return to_gpu_if_available(index), faiss_rows

    def nearest(self, q: np.ndarray, k: int) -> np.ndarray:
        """B x k snapshot rows of the nearest shapes by pooled vector (-1 where fewer)."""
        k = min(k, len(self.faiss_rows))
        _, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        return np.where(ids >= 0, self.faiss_rows[np.maximum(ids, 0)], -1)

    def groups(self, q: np.ndarray, mode: str, candidates: int, neighbors: int,
               category: str | None) -> list[CandidateGroup]:
        if mode not in MODES:
            raise IbsrError(f"--prefilter must be one of {', '.join(MODES)}, not {mode!r}")
        batch = np.arange(len(q))
        if category is not None:
            return [CandidateGroup(batch, self._category_rows([category]), categories=(category,))]
        if mode == "none":
            return [CandidateGroup(batch, None)]
        if mode == "exact":
            return [CandidateGroup(batch, None, pruned=True)]
        if mode == "ann":
            if candidates < 1:
                raise IbsrError(f"--candidates must be at least 1 (got {candidates})")
            return [CandidateGroup(batch, None, per_query_rows=self.nearest(q, candidates))]
        if neighbors < 1:
            raise IbsrError(f"--neighbors must be at least 1 (got {neighbors})")
        return self._category_groups(q, neighbors)

    def _category_groups(self, q: np.ndarray, neighbors: int) -> list[CandidateGroup]:
        predicted: dict[tuple[str, ...], list[int]] = {}
        for i, rows in enumerate(self.nearest(q, neighbors)):
            key = tuple(sorted({self.categories[r] for r in rows if r >= 0}))
            predicted.setdefault(key, []).append(i)
        return [CandidateGroup(np.array(members), self._category_rows(key), categories=key)
                for key, members in predicted.items()]

    def _category_rows(self, categories) -> np.ndarray:
        unknown = [c for c in categories if c not in self.rows_of_category]
        if unknown:
            raise IbsrError(f"no shapes of category {unknown[0]!r} in the index; "
                            f"categories: {', '.join(self.rows_of_category)}")
        return np.concatenate([self.rows_of_category[c] for c in categories])
