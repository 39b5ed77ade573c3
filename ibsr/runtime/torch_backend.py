"""The torch runtime: the reference every other runtime is checked against, and the fallback.

It runs the module as it is, under the component's precision (`ibsr.precision`: bf16 autocast
for the query encoder on CPUs with AVX512-BF16/AMX under IBSR_PRECISION=auto, float32
elsewhere), in the calling thread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ibsr.precision import encoder_autocast


@torch.no_grad()
def encode(encode_fn, component: str, x: torch.Tensor) -> torch.Tensor:
    """encode_fn(x) under the component's precision as float32 unit vectors (bf16 outputs are
    re-normalized in float32, so they are unit vectors to float32 precision too)."""
    with encoder_autocast(component, x.device.type):
        y = encode_fn(x)
    if y.dtype != torch.float32:
        y = F.normalize(y.float(), dim=-1)
    return y
