"""Candidate generation: which shapes each query's exact rerank looks at.

Modes (DESIGN.md "Search"):
- `category` (default): predict the query's categories from its `neighbors` nearest shapes
  (FAISS on pooled vectors) and rerank every shape of those categories;
- `ann`: rerank the `candidates` nearest shapes;
- `none`: the exhaustive top-k over every shape (the ground truth), scoring only the shapes
  whose upper bound can reach the k-th score (`pruned.py`), or all of them in one dense pass
  when that is cheaper (`pruned.py`: the bounds come from the flat sidecar, or are
  built from the views on first use);
- `exact`: the same as `none` (its name before `none` pruned; kept so that scripts keep working).
Queries that share a candidate set are grouped so each group is one rerank call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

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
    pruned: bool = False  # none/exact: rows None, scored by `pruned_rerank` with `Prefilter.shape_bounds`


class Prefilter:
    """FAISS over the pooled shape vectors of one pinned snapshot."""

    def __init__(self, index_dir, shapes):
        codes, names = shapes.category_codes()
        self.category_names = np.asarray(names, dtype=object)
        self.category_of_row = codes  # N indices into category_names
        # rows of each category, ascending: one stable sort instead of a scan per category
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        self.rows_of_category = {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}
        self.index, self.faiss_rows = self._load(index_dir, shapes)
        self._shapes, self._shape_bounds = shapes, None

    def shape_bounds(self) -> ShapeBounds:
        """The exact modes' score bounds: the flat sidecar's, else built from the views on first use."""
        if self._shape_bounds is None:
            stored = self._shapes.bounds
            self._shape_bounds = ShapeBounds.from_raw(*stored) if stored else ShapeBounds.build(self._shapes.views)
        return self._shape_bounds

    def _load(self, index_dir, shapes):
        """The stored index if it was built from this table version, else an exact one in memory."""
        stored = read_faiss(index_dir)
        if stored is not None and stored[1]["table_version"] == shapes.version:
            index, meta = stored
            return to_gpu_if_available(index), self._rows_of_ids(meta["shape_ids"], shapes)
        return to_gpu_if_available(build_faiss(shapes.vectors, "Flat")), np.arange(len(shapes))

    @staticmethod
    def _rows_of_ids(faiss_ids: list[str], shapes) -> np.ndarray:
        """Snapshot row of each FAISS id (-1 if absent): the identity when both follow the table's
        row order, as they do when written from one version (no per-row Python then)."""
        ids = shapes.rows.column("shape_id")
        if len(faiss_ids) == len(ids) and pa.chunked_array([pa.array(faiss_ids, ids.type)]).equals(ids):
            return np.arange(len(ids))
        row = {s: i for i, s in enumerate(shapes.shape_ids)}
        return np.array([row.get(s, -1) for s in faiss_ids], dtype=np.int64)

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
