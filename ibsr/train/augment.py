"""Training-time augmentation (DESIGN.md, "Augmentation"), batched in torch.

Query photos (B x 4 x Q x Q uint8: the cached, already cropped search-time input):
1. Reinhard color transfer in Lab (`ibsr.model.color_transfer`) with probability
   `color_transfer`: each chosen photo takes the object colour statistics of another photo of the
   same batch (the batch rolled by a random non-zero offset); statistics and recolouring are
   restricted to the mask pixels, so backgrounds neither leak into nor change.
2. One affine resampling per photo combining a random resized crop (area fraction in
   `crop_scale`, aspect ratio in `crop_ratio`, log-uniform), a translation of up to
   `translate` x side in each direction, and a horizontal flip with probability `flip`. The
   mask channel moves with the RGB; pixels shifted in from outside are black with mask 0, as
   `ibsr.photos.query.crop_to_mask` fills the outside of a photo.

Renderings (N x V x S x S uint8): a random resized crop (`render_crop_scale`, square) and a
horizontal flip (`render_flip`), drawn **once per shape and applied to all its V views**. A
shape's views stay one coherent set (same zoom, and all mirrored together, i.e. the views of the
mirrored object), and the attention compares views of equal scale; per-view jitter would teach
the network that views of one shape may disagree in scale, which never happens in the index.

Outputs are float32 in [-1, 1]; renderings and un-augmented photos are scaled by
`ibsr.model.inputs.scale_pixels`, exactly the search-time scaling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ibsr.model.color_transfer import color_transfer
from ibsr.model.inputs import scale_pixels
from ibsr.train.config import AugmentConfig


def augment_queries(x: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """B x 4 x Q x Q uint8 -> augmented B x 4 x Q x Q float32 in [-1, 1]."""
    b = x.shape[0]
    rgb = x[:, :3].float() / 255.0
    mask = x[:, 3:].float() / 255.0
    if cfg.color_transfer > 0 and b > 1:
        chosen = torch.from_numpy(rng.random(b) < cfg.color_transfer)
        if chosen.any():
            chosen = chosen.to(x.device)
            style = torch.roll(torch.arange(b, device=x.device), int(rng.integers(1, b)))
            recoloured = color_transfer(rgb, rgb[style], mask > 0.5, mask[style] > 0.5)
            rgb = torch.where(chosen.view(b, 1, 1, 1), recoloured, rgb)
    out = torch.cat([rgb, mask], dim=1) * 2.0 - 1.0
    theta = affines(rng, b, cfg.crop_scale, cfg.crop_ratio, cfg.translate, cfg.flip)
    return resample(out, theta, fill=-1.0)


def augment_views(views: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """N x V x S x S uint8 -> N x V x 1 x S x S float32 in [-1, 1], one crop/flip per shape."""
    n, v, s, _ = views.shape
    x = scale_pixels(views)
    theta = affines(rng, n, cfg.render_crop_scale, (1.0, 1.0), 0.0, cfg.render_flip)
    theta = theta.repeat_interleave(v, dim=0)
    # Crops stay inside the frame, so the fill value is never used; white (the background) anyway.
    out = resample(x.reshape(n * v, 1, s, s), theta, fill=1.0)
    return out.reshape(n, v, 1, s, s)


def plain_queries(x: torch.Tensor) -> torch.Tensor:
    return scale_pixels(x)


def plain_views(views: torch.Tensor) -> torch.Tensor:
    return scale_pixels(views).unsqueeze(2)


def apply_mask_mode(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The query-input ablations of the paper (B x 4 x H x W in [-1, 1]):
    - "concat": RGB + mask channel (the method);
    - "none": the mask channel is a constant 1 (as if the whole frame were the object);
    - "multiply": background pixels of the RGB are black (RGB times the mask), mask channel 1.
    """
    if mode == "concat":
        return x
    rgb, mask = x[:, :3], x[:, 3:]
    if mode == "multiply":
        rgb = (rgb + 1.0) * ((mask + 1.0) / 2.0) - 1.0
    return torch.cat([rgb, torch.ones_like(mask)], dim=1)


def affines(rng, n: int, scale, ratio, translate: float, flip: float) -> torch.Tensor:
    """n x 2 x 3 `affine_grid` matrices (output -> input normalized coordinates): a random resized
    crop (area fraction in `scale`, aspect ratio in `ratio`, log-uniform), a shift of up to
    `translate` x side each way, a horizontal flip with probability `flip`; drawn from `rng`."""
    area = rng.uniform(scale[0], scale[1], n)
    log_ratio = rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n)
    w = np.minimum(np.sqrt(area * np.exp(log_ratio)), 1.0)
    h = np.minimum(np.sqrt(area / np.exp(log_ratio)), 1.0)
    cx = rng.uniform(-1.0, 1.0, n) * (1.0 - w)
    cy = rng.uniform(-1.0, 1.0, n) * (1.0 - h)
    cx += rng.uniform(-2.0, 2.0, n) * translate
    cy += rng.uniform(-2.0, 2.0, n) * translate
    sign = np.where(rng.random(n) < flip, -1.0, 1.0)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return torch.from_numpy(theta)


def resample(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """`x` (B x C x H x W) resampled through `affines`' matrices, bilinear; outside pixels `fill`."""
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    # grid_sample pads with 0: shift so that the padding lands on `fill`.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
