"""Reinhard color transfer (Reinhard et al., 2001) in CIE Lab, in torch, for the training loop.

Each content image takes the per-channel Lab mean and standard deviation of its style image:

    lab_out = (lab_content - mean_content) / std_content * std_style + mean_style

Statistics can be restricted to the object (mask pixels), and then only the object's pixels are
recoloured, so a photo's background does not leak into the object's colours. sRGB <-> Lab uses
the D65 white point and plain torch math (no OpenCV), so it runs on any device, batched.
"""

from __future__ import annotations

import torch

# linear sRGB -> XYZ, D65 (IEC 61966-2-1)
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
# Reference white = the XYZ of RGB (1, 1, 1), so white maps exactly to L=100, a=b=0.
_WHITE = _RGB_TO_XYZ.sum(dim=1)
_DELTA = 6.0 / 29.0


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    # Sign-symmetric extension of the sRGB curve, so out-of-gamut values round-trip.
    a = c.abs()
    curve = ((a.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    return torch.sign(c) * torch.where(a <= 0.04045, a / 12.92, curve)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    a = c.abs()
    curve = 1.055 * a.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
    return torch.sign(c) * torch.where(a <= 0.0031308, a * 12.92, curve)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    cube_root = t.clamp(min=_DELTA**3) ** (1 / 3)
    return torch.where(t > _DELTA**3, cube_root, t / (3 * _DELTA**2) + 4 / 29)


def _lab_f_inv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def _mix_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to the channel axis (dim 1) of a B x 3 x H x W tensor."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(device=x.device, dtype=x.dtype), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W sRGB in [0, 1] -> CIE Lab (L in [0, 100], a/b roughly [-128, 127])."""
    xyz = _mix_channels(_RGB_TO_XYZ, _srgb_to_linear(rgb))
    xyz = xyz / _WHITE.to(device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    fx, fy, fz = _lab_f(xyz).unbind(dim=1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_lab` (not clamped: out-of-gamut colours leave [0, 1])."""
    L, a, b = lab.unbind(dim=1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = _lab_f_inv(f) * _WHITE.to(device=lab.device, dtype=lab.dtype).view(1, 3, 1, 1)
    return _linear_to_srgb(_mix_channels(torch.linalg.inv(_RGB_TO_XYZ), xyz))


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and (population) std over mask pixels: each B x C x 1 x 1.

    An empty mask falls back to the whole image, so a bad mask never yields NaNs.
    """
    if mask is None:
        weights = torch.ones_like(x[:, :1])
    else:
        weights = _as_weights(mask, x)
        empty = weights.sum(dim=(2, 3), keepdim=True) == 0
        weights = torch.where(empty, torch.ones_like(weights), weights)
    count = weights.sum(dim=(2, 3), keepdim=True)
    mean = (x * weights).sum(dim=(2, 3), keepdim=True) / count
    var = (((x - mean) ** 2) * weights).sum(dim=(2, 3), keepdim=True) / count
    return mean, var.sqrt()


def _as_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """B x H x W or B x 1 x H x W mask (bool or float, > 0.5 = object) -> B x 1 x H x W 0/1."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    return (mask > 0.5).to(like.dtype)


def color_transfer(
    content: torch.Tensor,
    style: torch.Tensor,
    content_mask: torch.Tensor | None = None,
    style_mask: torch.Tensor | None = None,
    clamp: bool = True,
) -> torch.Tensor:
    """Recolour each `content` image (B x 3 x H x W, RGB in [0, 1]) with the Lab statistics of
    the matching `style` image (B x 3 x H' x W'; e.g. the batch rolled by one).

    With masks, statistics come from the mask pixels only and only the content's mask pixels
    change. `clamp=False` returns the unclamped result (tests use it to check the statistics).
    """
    content_lab = rgb_to_lab(content)
    style_lab = rgb_to_lab(style)
    mean_c, std_c = masked_mean_std(content_lab, content_mask)
    mean_s, std_s = masked_mean_std(style_lab, style_mask)
    # A flat channel (std 0) is shifted to the style mean rather than blown up.
    transferred = (content_lab - mean_c) / std_c.clamp(min=1e-5) * std_s + mean_s
    out = lab_to_rgb(transferred)
    if content_mask is not None:
        out = torch.where(_as_weights(content_mask, content) > 0, out, content)
    return out.clamp(0, 1) if clamp else out
