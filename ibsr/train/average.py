"""Weight averaging of checkpoints of one lineage (WiSE-FT, Wortsman et al., CVPR 2022).

A short fine-tune of a model stays in its start's basin, so a weighted mean of the two weight
sets is a model too: it tends to keep much of the fine-tune's gain on the data it trained for
and much of the start's behaviour elsewhere. Averaging models of different lineages (trained
apart from different starts) gives noise; nothing here can check lineage, so the caller chooses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ibsr.errors import IbsrError
from ibsr.model.checkpoint import checkpoint_id, load_checkpoint_with_info, rendering_id
from ibsr.model.cmic import CMIC


def mixing_weights(count: int, weights: tuple[float, ...] | None) -> list[float]:
    """`weights` normalized to sum to 1 (equal weights when none are given)."""
    if not weights:
        return [1.0 / count] * count
    if len(weights) != count:
        raise IbsrError(f"{len(weights)} --weight values for {count} checkpoints; give one per checkpoint, "
                        "in the same order, or none for equal weights")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise IbsrError(f"--weight values {list(weights)} must be finite, >= 0 and not all 0")
    total = sum(weights)
    return [w / total for w in weights]


def average_checkpoints(paths: list[Path], weights: tuple[float, ...] | None = None) -> tuple[CMIC, dict]:
    """The weighted mean of the checkpoints' weights, as a model, and the `info` that records it
    (every input's path, encoder id, weight and own `info`).

    Floating tensors (weights and BatchNorm statistics) are averaged in float32; a tensor equal
    in every input is copied unchanged, so a part every run froze (the rendering encoder of a
    query-side fine-tune) keeps its exact bytes and indexes built with it stay valid. Integer
    buffers (BatchNorm's step counts) come from the first checkpoint.
    """
    if len(paths) < 2:
        raise IbsrError("average needs at least two checkpoints")
    mix = mixing_weights(len(paths), weights)
    loaded = [load_checkpoint_with_info(path) for path in paths]
    models = [model for model, _ in loaded]
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        if model.config != first.config:
            raise IbsrError(f"its model config differs from {paths[0]}'s ({_config_difference(first, model)}); "
                            "only checkpoints of one architecture (one lineage) can be averaged", path)
    first_rendering = rendering_id(first)
    states = [model.state_dict() for model in models]
    averaged = {name: _mean_tensor([state[name] for state in states], mix) for name in states[0]}
    first.load_state_dict(averaged)
    # each input's own info (its training config, command, base) travels along: the provenance
    info = {"averaged_from": [{"path": str(path), "encoder_id": checkpoint_id(path), "weight": w, "info": source}
                              for path, w, (_, source) in zip(paths, mix, loaded)],
            "same_rendering_as_first": rendering_id(first) == first_rendering}
    return first.eval(), info


def _mean_tensor(tensors: list[torch.Tensor], mix: list[float]) -> torch.Tensor:
    first = tensors[0]
    if not first.is_floating_point() or all(torch.equal(first, t) for t in tensors[1:]):
        return first.clone()
    return sum(w * t.float() for w, t in zip(mix, tensors)).to(first.dtype)


def _config_difference(a: CMIC, b: CMIC) -> str:
    left, right = a.config.to_dict(), b.config.to_dict()
    keys = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
    return ", ".join(f"{k}: {left.get(k)!r} vs {right.get(k)!r}" for k in keys)
