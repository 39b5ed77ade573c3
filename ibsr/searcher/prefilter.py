"""Candidate generation: which shapes each query's exact rerank looks at.

Modes (DESIGN.md "Search"):
- `category` (default): predict the query's categories from its `neighbors` nearest shapes
  (FAISS on pooled vectors) and rerank every shape of those categories;
- `ann`: rerank the `candidates` nearest shapes;
- `none`: the exhaustive top-k over every shape (the ground truth), scoring only the shapes
  whose upper bound can reach the k-th score (`pruned.py`), or all of them in one dense pass
  when that is cheaper (`pruned.py`, with the snapshot's bounds: the flat sidecar's, or
  built from the views on first use);
- `exact`: the same as `none` (its name before `none` pruned; kept so that scripts keep working).
Queries that share a candidate set are grouped so each group is one rerank call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ibsr.errors import IbsrError

MODES = ("category", "ann", "none", "exact")


@dataclass
class CandidateGroup:
    queries: np.ndarray  # positions in the query batch
    rows: np.ndarray | None  # shape rows to rerank (shared by the group), None = all
    per_query_rows: np.ndarray | None = None  # B_g x C rows, -1 padded (ann mode)
    categories: tuple[str, ...] = ()
    pruned: bool = False  # none/exact: rows None, scored by `pruned_rerank` with the snapshot's bounds


class Prefilter:
    """FAISS over the pooled shape vectors of one snapshot (`ibsr.index.IndexSnapshot`), and its categories."""

    def __init__(self, shapes):
        codes, names = shapes.category_codes()
        self.category_names = np.asarray(names, dtype=object)
        self.category_of_row = codes  # N indices into category_names
        # rows of each category, ascending: one stable sort instead of a scan per category
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        self.rows_of_category = {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}
        self.index, self.faiss_rows = shapes.faiss_index, shapes.faiss_rows

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
        if mode in ("none", "exact"):
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
            key = tuple(self.category_names[np.unique(self.category_of_row[rows[rows >= 0]])])
            predicted.setdefault(key, []).append(i)
        return [CandidateGroup(np.array(members), self._category_rows(key), categories=key)
                for key, members in predicted.items()]

    def _category_rows(self, categories) -> np.ndarray:
        unknown = [c for c in categories if c not in self.rows_of_category]
        if unknown:
            raise IbsrError(f"no shapes of category {unknown[0]!r} in the index; "
                            f"categories: {', '.join(self.rows_of_category)}")
        return np.concatenate([self.rows_of_category[c] for c in categories])
