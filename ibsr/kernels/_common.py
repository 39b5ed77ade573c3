"""Pieces shared by the torch and Triton paths: the result type, input checks, running top-k."""

from __future__ import annotations

import operator
import warnings
from typing import NamedTuple

import numpy as np
import torch

VIEW_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class Reranked(NamedTuple):
    """Top-k per query, best first.

    scores:    B x k float32 (-inf in padding slots)
    indices:   B x k int64, row indices into `views` (-1 in padding slots)
    best_view: B x k int64, argmax over views of the attention logit W q . v_j (-1 in padding)
    """

    scores: torch.Tensor
    indices: torch.Tensor
    best_view: torch.Tensor


def check_inputs(q: torch.Tensor, wq: torch.Tensor, views: torch.Tensor) -> tuple[int, int, int, int]:
    """Validate q, wq (B x D float32) and views (N x V x D); return (B, N, V, D)."""
    for name, t in (("q", q), ("wq", wq), ("views", views)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 2:
        raise ValueError(f"q must be B x D, got shape {tuple(q.shape)}")
    if wq.shape != q.shape:
        raise ValueError(f"wq must have q's shape {tuple(q.shape)}, got {tuple(wq.shape)}")
    if q.dtype != torch.float32 or wq.dtype != torch.float32:
        raise ValueError(f"q and wq must be float32, got {q.dtype} and {wq.dtype}")
    if views.dim() != 3:
        raise ValueError(f"views must be N x V x D, got shape {tuple(views.shape)}")
    if views.dtype not in VIEW_DTYPES:
        raise ValueError(f"views must be float16, bfloat16 or float32, got {views.dtype}")
    B, D = q.shape
    N, V, Dv = views.shape
    if Dv != D:
        raise ValueError(f"views have D={Dv} but q has D={D}")
    if N < 1 or V < 1 or D < 1:
        raise ValueError(f"views must be non-empty, got shape {tuple(views.shape)}")
    if not (q.device == wq.device == views.device):
        raise ValueError(f"q, wq and views must be on one device, got {q.device}, {wq.device}, {views.device}")
    return B, N, V, D


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `array`'s own memory, never a copy, read-only arrays included (the
    flat sidecar's read-only memory map, a table's Arrow buffer). `torch.from_numpy` warns on
    those; DLPack hands the memory over as it is. Nothing in the rerank writes to its views
    (a write to a read-only map would be a segmentation fault, not a private copy)."""
    try:
        return torch.from_dlpack(array, copy=False)
    except (BufferError, TypeError):  # numpy < 2.1 or torch without DLPack 1.0: no read-only export
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return torch.from_numpy(array)


def check_rows(rows: torch.Tensor, N: int, device) -> torch.Tensor:
    """Validate 1-D int64 rows (non-empty, in [0, N)) on `device`."""
    if not isinstance(rows, torch.Tensor):
        raise ValueError(f"rows must be a torch.Tensor, got {type(rows).__name__}")
    if rows.dim() != 1 or rows.numel() == 0:
        raise ValueError(f"rows must be a non-empty 1-D tensor, got shape {tuple(rows.shape)}")
    if rows.dtype != torch.int64:
        raise ValueError(f"rows must be int64, got {rows.dtype}")
    if rows.device != device:
        raise ValueError(f"rows must be on {device}, got {rows.device}")
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= N:
        raise ValueError(f"rows must be in [0, {N}), got values in [{lo}, {hi}]")
    return rows


def check_k(k) -> int:
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)  # int, numpy integer, integer 0-d tensor
    except TypeError:
        raise ValueError(f"k must be an integer, got {k!r}") from None
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def check_candidates(candidates: torch.Tensor, B: int, N: int, device) -> torch.Tensor:
    """Validate B x C int64 candidates (-1 = padding) and return them with duplicates
    within a row replaced by -1 (so a shape is never returned twice)."""
    if not isinstance(candidates, torch.Tensor):
        raise ValueError(f"candidates must be a torch.Tensor, got {type(candidates).__name__}")
    if candidates.dim() != 2 or candidates.shape[0] != B:
        raise ValueError(f"candidates must be B x C with B={B}, got shape {tuple(candidates.shape)}")
    if candidates.dtype != torch.int64:
        raise ValueError(f"candidates must be int64, got {candidates.dtype}")
    if candidates.device != device:
        raise ValueError(f"candidates must be on {device}, got {candidates.device}")
    if candidates.numel():
        lo, hi = int(candidates.min()), int(candidates.max())
        if lo < -1 or hi >= N:
            raise ValueError(f"candidates must be in [0, {N}) or -1 (padding), got values in [{lo}, {hi}]")
    if candidates.shape[1] < 2:
        return candidates
    cand, _ = candidates.sort(dim=1)
    dup = cand[:, 1:] == cand[:, :-1]
    cand[:, 1:].masked_fill_(dup, -1)
    return cand


class RunningTopK:
    """Top-k per row over column chunks, without ever holding all columns.

    Each chunk is reduced to its own top-k; the kept pieces are merged once they exceed
    max(2k, 65536) columns, so memory stays O(B x (k + chunk)) and time O(N log k)-ish.
    An optional int payload (best view) travels with each kept column.
    """

    def __init__(self, B: int, k: int, device, merge_cols: int = 1 << 16):
        self.B, self.k, self.device = B, k, device
        self.merge_cols = max(2 * k, merge_cols)
        self.vals: list[torch.Tensor] = []
        self.idx: list[torch.Tensor] = []
        self.extra: list[torch.Tensor] = []
        self.cols = 0

    @staticmethod
    def reduce(scores: torch.Tensor, idx: torch.Tensor, k: int, extra: torch.Tensor | None = None):
        """One chunk's own top-k (or a copy of it when it has <= k columns): what `add` keeps.
        Pure, so parallel workers can run it and hand the pieces to `add_reduced` in order."""
        n = scores.shape[1]
        if idx.dim() == 1:
            idx = idx.unsqueeze(0).expand(scores.shape[0], n)
        if n > k:
            scores, pos = scores.topk(k, dim=1)
            idx = idx.gather(1, pos)
            if extra is not None:
                extra = extra.gather(1, pos)
        else:  # keep our own copy: callers reuse their chunk buffers
            scores = scores.clone()
            idx = idx.clone()
            if extra is not None:
                extra = extra.clone()
        return scores, idx, extra

    def add(self, scores: torch.Tensor, idx: torch.Tensor, extra: torch.Tensor | None = None) -> None:
        """scores B x n; idx B x n (global indices) or 1-D n; extra B x n or None."""
        if scores.shape[1] == 0:
            return
        self.add_reduced(*self.reduce(scores, idx, self.k, extra))

    def add_reduced(self, scores: torch.Tensor, idx: torch.Tensor, extra: torch.Tensor | None = None) -> None:
        """Keep the output of `reduce` (chunks must arrive in the same order for the same bits)."""
        if scores.shape[1] == 0:
            return
        self.vals.append(scores)
        self.idx.append(idx)
        if extra is not None:
            self.extra.append(extra)
        self.cols += scores.shape[1]
        if self.cols > self.merge_cols:
            self._merge()

    def _merge(self) -> None:
        vals = torch.cat(self.vals, dim=1)
        idx = torch.cat(self.idx, dim=1)
        extra = torch.cat(self.extra, dim=1) if self.extra else None
        kk = min(self.k, vals.shape[1])
        vals, pos = vals.topk(kk, dim=1)  # sorted, best first
        idx = idx.gather(1, pos)
        self.vals, self.idx = [vals], [idx]
        self.extra = [extra.gather(1, pos)] if extra is not None else []
        self.cols = kk

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(scores B x k float32, indices B x k int64, extra B x k or None); slots that hold
        no finite score (padding) get score -inf and index -1 (extra -1)."""
        B, k = self.B, self.k
        if not self.vals:
            vals = torch.full((B, k), float("-inf"), dtype=torch.float32, device=self.device)
            idx = torch.full((B, k), -1, dtype=torch.int64, device=self.device)
            return vals, idx, (idx.clone() if self.extra is not None else None)
        self._merge()
        vals, idx = self.vals[0].float(), self.idx[0].long()
        extra = self.extra[0].long() if self.extra else None
        if vals.shape[1] < k:
            pad = k - vals.shape[1]
            vals = torch.cat([vals, vals.new_full((B, pad), float("-inf"))], dim=1)
            idx = torch.cat([idx, idx.new_full((B, pad), -1)], dim=1)
            if extra is not None:
                extra = torch.cat([extra, extra.new_full((B, pad), -1)], dim=1)
        empty = vals == float("-inf")
        idx = idx.masked_fill(empty, -1)
        if extra is not None:
            extra = extra.masked_fill(empty, -1)
        return vals.contiguous(), idx.contiguous(), extra
