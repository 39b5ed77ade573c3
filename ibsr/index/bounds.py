"""Each shape's view bounds: the centre c_s of its V view embeddings and their radius r_s.

    c_s = mean_j v_sj,    r_s = max_j |v_sj - c_s|

A query's attention score of shape s lies within a band around q . c_s whose width grows with
r_s (`ShapeBounds.bounds`); the exact search (`ibsr.searcher.pruned`, whose docstring derives the
bound) skips the shapes whose bound cannot reach the k-th score. They are a property of the
index's rows: the flat sidecar stores them next to the views (`flat.py`), a snapshot hands them
out (`IndexSnapshot.bounds`), and verify recomputes them to check the sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ibsr import kernels
from ibsr.cpus import parallel_map

SLACK = 1e-4  # added to every bound: far above float32 rounding of a D <= 1024 dot product and a softmax
BOUND_CHUNK = 1 << 15  # shapes per work item of the bounds pass (2 MB of centres per query row)


def view_bounds(views: np.ndarray | torch.Tensor, chunk: int = 1 << 14) -> tuple[torch.Tensor, torch.Tensor]:
    """Each shape's view centre (N x D) and radius (N), float32, without the search's `SLACK`. Row by row, so
    a shape's bound does not depend on the rows around it (the sidecar computes it per batch)."""
    N, V, D = views.shape
    centres, radii = torch.empty(N, D), torch.empty(N)
    for n0 in range(0, N, chunk):
        part = views[n0:n0 + chunk]  # numpy views may be read-only maps: converted per chunk, by torch
        v = (kernels.host_tensor(part) if isinstance(part, np.ndarray) else part.cpu()).float()
        c = v.mean(dim=1)
        centres[n0:n0 + chunk] = c
        radii[n0:n0 + chunk] = (v - c[:, None]).norm(dim=2).amax(dim=1)
    return centres, radii


@dataclass
class ShapeBounds:
    """Each shape's view centre and radius, and the upper bound on its scores they give
    (derived in `ibsr.searcher.pruned`'s docstring)."""

    centres: torch.Tensor  # N x D float32
    radii: torch.Tensor  # N float32

    @classmethod
    def build(cls, views: np.ndarray | torch.Tensor) -> "ShapeBounds":
        """views: N x V x D, any float dtype (upcast to float32 as the rerank does)."""
        return cls.from_raw(*view_bounds(views))

    @classmethod
    def from_raw(cls, centres, radii) -> "ShapeBounds":
        """From `view_bounds` output (torch, or numpy such as the flat sidecar's read-only maps,
        which are used in place)."""
        return cls(*(kernels.host_tensor(a) if isinstance(a, np.ndarray) else a for a in (centres, radii)))

    def bounds(self, q: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        """B x N upper bounds on the scores of queries q with attention keys wq (on the bounds' device).
        On a CPU, chunks of shapes go to the torch worker pool: the pass reads every centre (512 MB
        at 1M shapes), and one thread left half the memory bandwidth unused (benchmarks/RESULTS.md,
        "Scale")."""
        q, wq = q.to(self.centres.device), wq.to(self.centres.device)
        out = torch.empty(len(q), len(self.radii), device=q.device)
        spans = [(n0, min(len(self.radii), n0 + BOUND_CHUNK)) for n0 in range(0, len(self.radii), BOUND_CHUNK)]
        if q.device.type == "cpu":
            for _ in parallel_map(lambda span: self._bound_chunk(q, wq, out, *span), spans):
                pass
        else:
            self._bound_chunk(q, wq, out, 0, len(self.radii))
        return out

    def _bound_chunk(self, q, wq, out, n0: int, n1: int) -> None:
        radii = self.radii[n0:n1].unsqueeze(0)
        spread = radii * wq.norm(dim=1, keepdim=True)  # delta_s: the logits' half-band
        weight = spread.mul_(0.5).tanh_().mul_(2).clamp_(max=1)  # min(1, 2 tanh(delta_s / 2))
        slack = weight.mul_(radii * q.norm(dim=1, keepdim=True)).add_(SLACK)
        torch.addmm(slack, q, self.centres[n0:n1].t(), out=out[:, n0:n1])
