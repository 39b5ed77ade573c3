"""Float64 numpy reference of the query-conditioned attention score (for tests and audits).

Slow and memory-hungry (materializes B x N x V in float64): use it on small inputs only.
"""

from __future__ import annotations

import numpy as np


def _np64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (any dtype, including bfloat16)
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def reference_scores(q, wq, views) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores B x N float64, best_view B x N int64).

    a_j = wq . v_j, w = softmax_j(a), score = sum_j w_j (q . v_j); best view = argmax_j a_j
    (first index on exact ties).
    """
    q, wq, views = _np64(q), _np64(wq), _np64(views)
    a = np.einsum("bd,nvd->bnv", wq, views)
    c = np.einsum("bd,nvd->bnv", q, views)
    m = a.max(axis=2, keepdims=True)
    e = np.exp(a - m)
    scores = (e * c).sum(axis=2) / e.sum(axis=2)
    return scores, a.argmax(axis=2)
