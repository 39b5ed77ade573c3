"""The camera side of a synthetic query photo: lens blur, sensor, tone curve, colour cast.

The renderer produces linear radiance; these steps turn it into what a phone writes: optical /
handshake blur (an elongated Gaussian for motion), exposure and an imperfect white balance,
vignetting, a filmic tone curve with sRGB gamma, a saturation tweak, signal-dependent sensor
noise, and (held-out toon look) posterization. All per-pixel steps depend only on the params
and the pixel position, so the background of a photo can be re-rendered on its own.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Colour of black-body light (linear RGB, green = 1), from warm tungsten to blue shade.
KELVIN = ((2500, (1.0, 0.62, 0.30)), (3000, (1.0, 0.70, 0.42)), (3500, (1.0, 0.78, 0.56)),
          (4500, (1.0, 0.88, 0.76)), (5500, (1.0, 0.95, 0.90)), (6500, (0.96, 0.97, 1.0)),
          (8000, (0.86, 0.91, 1.0)), (10000, (0.78, 0.86, 1.0)))


def kelvin_rgb(kelvin: float) -> tuple[float, float, float]:
    temps = np.array([k for k, _ in KELVIN], float)
    colors = np.array([c for _, c in KELVIN], float)
    return tuple(float(np.interp(kelvin, temps, colors[:, i])) for i in range(3))


def blur_kernel(sigma: float, elongation: float, angle_deg: float) -> np.ndarray:
    """A Gaussian blur kernel, stretched `elongation` times along `angle_deg` (handshake)."""
    along, across = sigma * max(elongation, 1.0), sigma
    radius = int(math.ceil(3 * along))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
    a = math.radians(angle_deg)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    kernel = np.exp(-0.5 * ((u / along) ** 2 + (v / across) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def lens_blur(image: np.ndarray, sigma: float, elongation: float = 1.0, angle_deg: float = 0.0) -> np.ndarray:
    if sigma <= 0:
        return image
    if elongation <= 1.0:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.filter2D(image, -1, blur_kernel(sigma, elongation, angle_deg), borderType=cv2.BORDER_REFLECT)


def vignette_map(size: int, strength: float) -> np.ndarray:
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    return 1 - strength * np.clip((xx ** 2 + yy ** 2) / 2, 0, 1) ** 1.2


def filmic(x: np.ndarray) -> np.ndarray:
    """ACES-like tone curve (Narkowicz's fit): soft highlight roll-off, 0 -> 0, inf -> 1."""
    x = np.maximum(x, 0)
    return np.clip((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14), 0, 1).astype(x.dtype)


def sensor(radiance: np.ndarray, params) -> np.ndarray:
    """Linear radiance HxWx3 -> uint8 sRGB photo, with the camera's exposure, white balance,
    vignetting, tone curve, saturation, noise and posterization from `params`."""
    size = radiance.shape[0]
    gain = (params.exposure * np.asarray(params.white_balance, float)).astype(np.float32)
    image = radiance.astype(np.float32) * gain[None, None, :]
    if params.vignette > 0:
        image *= vignette_map(size, params.vignette).astype(np.float32)[..., None]
    image = filmic(image) ** np.float32(1 / 2.2)
    if params.saturation != 1.0:
        gray = image.mean(axis=2, keepdims=True)
        image = np.clip(gray + np.float32(params.saturation) * (image - gray), 0, 1)
    if params.noise_sigma > 0:  # brighter pixels are noisier (shot noise), colour noise included
        rng = np.random.default_rng(params.noise_seed)
        sigma = np.float32(params.noise_sigma / 255) * (0.5 + image)
        grain = rng.standard_normal(image.shape, dtype=np.float32)
        grain += 0.7 * rng.standard_normal((size, size, 1), dtype=np.float32)
        image = image + sigma * grain
    if params.posterize > 0:
        levels = params.posterize
        image = np.round(np.clip(image, 0, 1) * (levels - 1)) / (levels - 1)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def draw_outlines(rgb: np.ndarray, mask: np.ndarray, depth: np.ndarray, size: int) -> np.ndarray:
    """Dark ink lines along the object's silhouette and depth steps, inside the mask only
    (so the background stays the background)."""
    m = mask.astype(np.uint8)
    edge = m - cv2.erode(m, np.ones((3, 3), np.uint8))
    d = np.where(mask, depth, 0).astype(np.float32)
    step = cv2.morphologyEx(d, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0.08
    ink = (edge.astype(bool) | step) & mask
    if size >= 160:
        ink = cv2.dilate(ink.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool) & mask
    out = rgb.copy()
    out[ink] = (out[ink] * 0.15).astype(np.uint8)
    return out
