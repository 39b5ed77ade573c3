"""Candidate sets: the shapes a group of queries reranks, each set scoring itself.

A prefilter returns sets; the Searcher asks each one to rerank its queries, one rerank call per
set. torch and the kernels are imported when a set first scores: the command lines read the
registry's names and help at startup, which need not wait for torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateSet:
    queries: np.ndarray  # positions in the query batch

    categories = ()  # the categories the set holds, reported as each result's predicted_categories

    def rerank(self, q, wq, views, snapshot, k: int):
        """(Reranked top k of the set's queries q, W q (their rows of the batch) over `views`,
        as snapshot rows; how many shapes each query scored exactly, an array)."""
        raise NotImplementedError


@dataclass
class AllShapes(CandidateSet):
    """Every shape: the exhaustive top k, scoring only the shapes whose bound can reach it
    (`ibsr.searcher.pruned`, with the snapshot's bounds)."""

    def rerank(self, q, wq, views, snapshot, k: int):
        from ibsr.searcher.pruned import pruned_rerank

        pruned = pruned_rerank(q, wq, views, snapshot.bounds, k)
        return pruned.ranked, pruned.scored


@dataclass
class PerQueryRows(CandidateSet):
    """Each query its own shapes (the nearest ones)."""

    rows: np.ndarray  # B_g x C snapshot rows, -1 padded

    def rerank(self, q, wq, views, snapshot, k: int):
        return _rerank(q, wq, views, k, candidates=self.rows), (self.rows >= 0).sum(axis=1)


@dataclass
class SharedRows(CandidateSet):
    """One list of shapes for every query of the set (the shapes of some categories)."""

    rows: np.ndarray  # snapshot rows, gathered chunk by chunk by the rerank
    categories: tuple[str, ...] = ()

    def rerank(self, q, wq, views, snapshot, k: int):
        return _rerank(q, wq, views, k, rows=self.rows), np.full(len(self.queries), len(self.rows))


def _rerank(q, wq, views, k: int, **restriction):
    """`kernels.rerank` restricted to `candidates=` or `rows=` given as numpy snapshot rows."""
    import torch

    from ibsr import kernels

    restriction = {name: torch.from_numpy(rows).to(views.device) for name, rows in restriction.items()}
    return kernels.rerank(q, wq, views, k, **restriction)
