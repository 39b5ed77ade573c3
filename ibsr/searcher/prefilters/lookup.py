"""What prefilters look shapes up in, built once per snapshot: the nearest shapes by pooled
vector (FAISS) and the rows of each category."""

from __future__ import annotations

import numpy as np

from ibsr.errors import IbsrError


class ShapeLookup:
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

    def categories_of(self, rows: np.ndarray) -> tuple[str, ...]:
        """The sorted categories of `rows` (-1 padding ignored)."""
        return tuple(self.category_names[np.unique(self.category_of_row[rows[rows >= 0]])])

    def category_rows(self, categories) -> np.ndarray:
        """Every row of these categories; an unknown one is an `IbsrError` listing the index's."""
        unknown = [c for c in categories if c not in self.rows_of_category]
        if unknown:
            raise IbsrError(f"no shapes of category {unknown[0]!r} in the index; "
                            f"categories: {', '.join(self.rows_of_category)}")
        return np.concatenate([self.rows_of_category[c] for c in categories])
