"""What a build does with each rendered shape, wherever it was rendered: the local build
(build.py) and the Ray pipeline (ray_backend.py) both encode renderings and report failed
meshes through these, so that both give the same index and the same report.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from ibsr.errors import IbsrError
from ibsr.model.inputs import scale_pixels


@torch.no_grad()
def encode_views(model, device: torch.device, views: np.ndarray) -> np.ndarray:
    """N x V x S x S uint8 gray renderings -> N x V x D float32 normalized embeddings."""
    x = scale_pixels(torch.from_numpy(views).to(device, torch.float32))
    # one shape per work item of the torch pool; float32 on every CPU (ibsr.precision)
    from ibsr.model.inference import embed_views

    return embed_views(model, x.unsqueeze(2)).cpu().numpy()


def record_failure(result: dict, report, strict: bool, bar) -> None:
    """A mesh that failed to load or render (`result`: path, error): fatal with `strict`, else
    listed in the build's report and shown above the progress bar."""
    if strict:
        raise IbsrError(f"{result['error']} (--strict stops at the first bad mesh)", result["path"])
    report.failed.append({"path": result["path"], "reason": result["error"]})
    bar.write(f"skipped {result['path']}: {result['error']}", file=sys.stderr)
