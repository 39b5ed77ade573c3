"""Each shape's view bounds: the centre c_s of its V view embeddings and their radius r_s.

    c_s = mean_j v_sj,    r_s = max_j |v_sj - c_s|

A query's attention score of shape s lies within a band around q . c_s whose width grows with
r_s; the exact search (`ibsr.searcher.pruned`, whose docstring derives the bound) skips the
shapes whose bound cannot reach the k-th score. They are a property of the index's rows: the
flat sidecar stores them next to the views (`flat.py`), and verify recomputes them to check it.
"""

from __future__ import annotations

import numpy as np
import torch

from ibsr import kernels


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
