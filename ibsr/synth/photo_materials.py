"""Materials of the synthetic query photos: what a surface looks like under the photo's lights.

A `Material` is a kind (wood, fabric, leather, metal, glossy/matte plastic, painted) plus a
base colour and a few knobs; its look is a solid texture evaluated at the 3D hit points (no UVs
needed, so any mesh works) and a small physically-flavoured shading model: Lambert diffuse,
a Blinn-Phong highlight with Schlick Fresnel, an environment-reflection term looked up in a
cheap analytic environment (strong on metal and glossy plastic) and a grazing sheen on fabric.
Shading runs in linear RGB; colours are given in sRGB, as they are picked.

Parts get materials by role (`sample_part_materials`): legs and frames are wood, metal or
painted, cushions fabric or leather, handles metal..., guessed from the part's name, and parts
of one role usually share one material, as real furniture does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MATERIAL_KINDS = ("wood", "fabric", "leather", "metal", "plastic", "matte_plastic", "painted")


@dataclass(frozen=True)
class Material:
    kind: str = "painted"                        # one of MATERIAL_KINDS
    color: tuple[float, float, float] = (0.6, 0.6, 0.6)  # base colour, sRGB 0..1
    roughness: float = 0.5                       # 0 = mirror-like .. 1 = chalk
    scale: float = 8.0                           # pattern frequency (per normalized unit)
    seed: int = 0


def srgb_to_linear(color) -> np.ndarray:
    return np.asarray(color, dtype=np.float64) ** 2.2


# ---------------------------------------------------------------- sampling

WOOD_COLORS = ((0.78, 0.62, 0.44), (0.66, 0.47, 0.30), (0.52, 0.33, 0.20), (0.38, 0.24, 0.15),
               (0.28, 0.18, 0.12), (0.86, 0.76, 0.60), (0.60, 0.36, 0.22), (0.18, 0.14, 0.12))
METAL_COLORS = ((0.92, 0.92, 0.93), (0.70, 0.71, 0.73), (0.90, 0.76, 0.45), (0.85, 0.55, 0.40),
                (0.25, 0.25, 0.27), (0.55, 0.55, 0.55))
LEATHER_COLORS = ((0.36, 0.22, 0.14), (0.12, 0.10, 0.10), (0.62, 0.42, 0.26), (0.85, 0.80, 0.70),
                  (0.45, 0.12, 0.10), (0.25, 0.28, 0.35))

# kind weights by part role; a part's role is guessed from its name (`part_role`)
ROLE_KINDS = {
    "soft": {"fabric": 0.65, "leather": 0.25, "matte_plastic": 0.05, "painted": 0.05},
    "seat": {"wood": 0.3, "fabric": 0.3, "leather": 0.12, "plastic": 0.12, "matte_plastic": 0.06,
             "painted": 0.06, "metal": 0.04},
    "shade": {"fabric": 0.55, "painted": 0.15, "metal": 0.15, "plastic": 0.15},
    "frame": {"wood": 0.4, "metal": 0.3, "painted": 0.2, "plastic": 0.05, "matte_plastic": 0.05},
    "panel": {"wood": 0.5, "painted": 0.3, "plastic": 0.08, "matte_plastic": 0.07, "metal": 0.05},
    "hardware": {"metal": 0.8, "wood": 0.1, "plastic": 0.1},
    "bulb": {"plastic": 1.0},
    "other": {"wood": 0.3, "painted": 0.22, "plastic": 0.14, "metal": 0.14, "fabric": 0.1,
              "matte_plastic": 0.05, "leather": 0.05},
    # an object made of one material throughout: rarely all metal or all fabric
    "whole": {"wood": 0.35, "painted": 0.25, "plastic": 0.15, "matte_plastic": 0.1, "fabric": 0.07,
              "metal": 0.05, "leather": 0.03},
}
ROLE_WORDS = (  # first match wins
    ("bulb", ("bulb",)),
    ("hardware", ("handle", "knob", "hinge", "pull", "caster", "wheel", "screw")),
    ("soft", ("cushion", "mattress", "pillow", "pad", "upholster", "blanket", "duvet")),
    ("shade", ("shade",)),
    ("seat", ("seat", "back", "arm")),
    ("frame", ("leg", "frame", "base", "stem", "stretcher", "joint", "rail", "pole", "foot",
               "support", "rod", "tube", "apron")),
    ("panel", ("top", "body", "door", "drawer", "hutch", "board", "panel", "shelf", "side",
               "desk", "box", "cabinet")),
)


def part_role(name: str) -> str:
    name = name.lower()
    for role, words in ROLE_WORDS:
        if any(word in name for word in words):
            return role
    return "other"


def random_color(rng, saturation=(0.1, 0.8), value=(0.2, 0.95)) -> tuple[float, float, float]:
    """An sRGB colour from uniform HSV draws (OpenCV's 8-bit HSV: hue 0..179)."""
    hsv = np.uint8([[[rng.integers(0, 180), 255 * rng.uniform(*saturation), 255 * rng.uniform(*value)]]])
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return tuple(float(c) for c in rgb)


def _jitter(rng, color, amount=0.06) -> tuple[float, float, float]:
    return tuple(float(np.clip(c * (1 + rng.uniform(-amount, amount)), 0, 1)) for c in color)


def _palette_color(rng, palette) -> tuple[float, float, float]:
    return _jitter(rng, palette[int(rng.integers(len(palette)))])


def _furniture_color(rng) -> tuple[float, float, float]:
    """Colours furniture comes in: many neutrals (white, greys, black, beige), some colours."""
    if rng.random() < 0.5:
        grey = float(rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.35, 0.7), rng.uniform(0.8, 0.95)]))
        return _jitter(rng, (grey, grey * rng.uniform(0.96, 1.0), grey * rng.uniform(0.88, 1.0)), 0.03)
    return random_color(rng, saturation=(0.15, 0.85), value=(0.25, 0.9))


def sample_material(rng, kind: str | None = None) -> Material:
    """A random material of `kind` (any kind if None), with a colour typical of the kind."""
    kind = kind or MATERIAL_KINDS[int(rng.integers(len(MATERIAL_KINDS)))]
    if kind == "wood":
        color, roughness = _palette_color(rng, WOOD_COLORS), rng.uniform(0.35, 0.8)
    elif kind == "metal":
        color, roughness = _palette_color(rng, METAL_COLORS), rng.uniform(0.05, 0.45)
    elif kind == "leather":
        color, roughness = _palette_color(rng, LEATHER_COLORS), rng.uniform(0.35, 0.6)
    elif kind == "fabric":
        color, roughness = random_color(rng, saturation=(0.05, 0.7), value=(0.15, 0.9)), 1.0
    elif kind == "plastic":
        color, roughness = _furniture_color(rng), rng.uniform(0.08, 0.25)
    elif kind == "matte_plastic":
        color, roughness = _furniture_color(rng), rng.uniform(0.55, 0.85)
    else:
        color, roughness = _furniture_color(rng), rng.uniform(0.3, 0.8)
    return Material(kind=kind, color=color, roughness=float(roughness), scale=float(rng.uniform(4, 14)),
                    seed=int(rng.integers(2**31)))


def _weighted_choice(rng, weights: dict) -> str:
    names = list(weights)
    p = np.asarray([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_part_materials(part_names, rng) -> tuple[tuple[Material, ...], tuple[int, ...]]:
    """Materials for a shape's parts: (materials, material index of each part).

    The kind of each part comes from its role; a part reuses an earlier material of the same
    kind most of the time (a chair's legs and back in one wood), and a third of the objects
    are one material throughout."""
    if rng.random() < 0.3 or len(part_names) == 1:
        only = sample_material(rng, _weighted_choice(rng, ROLE_KINDS["whole"]))
        return (only,), tuple(0 for _ in part_names)
    materials: list[Material] = []
    assignment = []
    for name in part_names:
        role = part_role(name)
        kind = _weighted_choice(rng, ROLE_KINDS[role])
        same = [i for i, m in enumerate(materials) if m.kind == kind]
        if role == "bulb":
            material = Material("plastic", (0.97, 0.95, 0.88), 0.1, 4.0, 0)
        elif same and rng.random() < 0.75:
            assignment.append(same[0])
            continue
        else:
            material = sample_material(rng, kind)
        materials.append(material)
        assignment.append(len(materials) - 1)
    return tuple(materials), tuple(assignment)


# ---------------------------------------------------------------- textures

def wave_noise(points: np.ndarray, scale: float, seed: int, waves: int = 6,
               footprint: np.ndarray | None = None) -> np.ndarray:
    """Smooth solid noise, about [-1, 1]: a sum of random plane waves (cheap, no lattice).

    `footprint` (per point, same units as `points`) fades each wave out where it is finer
    than a pixel, so far-away textures average out instead of aliasing. float32 inside: it
    is the renderer's most called function, and texture values need no more precision."""
    rng = np.random.default_rng(seed)
    freqs = rng.normal(size=(waves, points.shape[1])) * scale
    phases = rng.uniform(0, 2 * math.pi, size=waves)
    values = np.sin(points.astype(np.float32) @ freqs.T.astype(np.float32) + phases.astype(np.float32))
    if footprint is not None:
        wavelength = (2 * math.pi / np.maximum(np.linalg.norm(freqs, axis=1), 1e-9)).astype(np.float32)
        values *= np.clip(1.5 - 2.0 * footprint.astype(np.float32)[:, None] / wavelength[None, :], 0, 1)
    return values.mean(axis=1).astype(np.float64) * math.sqrt(2.0)


def _across(points: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Coordinates of the points in the plane perpendicular to `axis` (2 columns)."""
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b1 = np.cross(axis, helper)
    b1 /= np.linalg.norm(b1)
    b2 = np.cross(axis, b1)
    return np.stack([points @ b1, points @ b2], axis=1)


def albedo(material: Material, points: np.ndarray, axis=(0.0, 1.0, 0.0),
           footprint: np.ndarray | None = None) -> np.ndarray:
    """Linear-RGB albedo of the material at 3D hit points (N, 3).

    `axis` is the grain / brushing direction (the part's long axis); `footprint` the world size
    of a pixel at each point (fades out detail finer than a pixel)."""
    n = len(points)
    base = np.asarray(material.color, dtype=np.float64)[None, :]
    fp = footprint if footprint is not None else np.zeros(n)
    axis = np.asarray(axis, dtype=np.float64)
    s, seed = material.scale, material.seed
    if material.kind == "wood":
        # fine streaks along the grain (fast across the axis, slow along it, wobbled by noise)
        # over a slow variation of the tone: how wood reads at photo resolution
        across = _across(points, axis)
        along = points @ axis
        wobble = wave_noise(np.column_stack([across, along * 0.1]), s * 0.5, seed)
        freq = s * 30
        streaks = np.sin(freq * across[:, 0] + 6.0 * wobble) * np.clip(1.5 - fp * freq / 3, 0, 1)
        fibre = wave_noise(np.column_stack([across * 8, along * 0.4]), s * 3, seed + 1, footprint=fp * 8)
        tone = 0.9 + 0.06 * streaks + 0.05 * fibre + 0.08 * wave_noise(points, s * 0.25, seed + 2)
        color = base * tone[:, None]
    elif material.kind == "fabric":
        weave = wave_noise(points, s * 12, seed, waves=8, footprint=fp)
        mottle = wave_noise(points, s * 0.8, seed + 1)
        color = base * (0.92 + 0.04 * weave + 0.06 * mottle)[:, None]
    elif material.kind == "leather":
        grain = wave_noise(points, s * 6, seed, waves=8, footprint=fp)
        color = base * (0.92 + 0.07 * grain + 0.05 * wave_noise(points, s, seed + 1))[:, None]
    elif material.kind == "metal":  # brushed along the axis
        brush = wave_noise(_across(points, axis) * 20, s, seed, footprint=fp * 20)
        color = base * (0.95 + 0.05 * brush)[:, None]
    else:  # paint and plastic: almost uniform, a little unevenness
        color = base * (0.97 + 0.03 * wave_noise(points, s * 0.5, seed))[:, None]
    return srgb_to_linear(np.clip(color, 0, 1))


# ---------------------------------------------------------------- shading

@dataclass
class Lighting:
    """Everything shading needs about the lights, in linear RGB.

    `lights`: (direction towards the light, colour) pairs; `sky`/`ground`: the ambient light
    from above and from below (hemisphere lighting); `environment(r)` -> (N, 3) radiance seen in
    direction r, used for reflections; `toon` quantizes the diffuse term (held-out style)."""

    lights: list
    sky: np.ndarray
    ground: np.ndarray
    environment: object
    toon: bool = False

    def ambient(self, normals: np.ndarray) -> np.ndarray:
        up = 0.5 + 0.5 * normals[:, 1:2]
        return self.ground[None, :] * (1 - up) + self.sky[None, :] * up


def shade(material: Material, base: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray,
          lighting: Lighting, shadows: list, ao: np.ndarray) -> np.ndarray:
    """Linear radiance (N, 3) of hit points with albedo `base` and unit `normals` facing the
    camera; `view_dirs` point from the camera into the scene; `shadows[i]` (N,) is the
    visibility of light i, `ao` (N,) the ambient occlusion."""
    metal = material.kind == "metal"
    rough = float(np.clip(material.roughness, 0.03, 1.0))
    n_dot_v = np.clip(-np.einsum("ij,ij->i", normals, view_dirs), 0, 1)[:, None]
    f0 = base if metal else np.full_like(base, 0.04)
    fresnel = f0 + (1 - f0) * (1 - n_dot_v) ** 5 * (1 - rough) ** 2
    diffuse_weight = 0.0 if metal else 1.0
    ambient = lighting.ambient(normals)
    color = diffuse_weight * base * ambient * ao[:, None]
    shininess = 2.0 / rough ** 2
    for (direction, light_color), visible in zip(lighting.lights, shadows):
        direction = np.asarray(direction)
        n_dot_l = np.clip(normals @ direction, 0, 1)
        if lighting.toon:
            n_dot_l = np.floor(n_dot_l * 3 + 0.5) / 3
        lit = (n_dot_l * visible)[:, None] * np.asarray(light_color)[None, :]
        half = direction[None, :] - view_dirs
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        highlight = np.clip(np.einsum("ij,ij->i", normals, half), 0, 1) ** shininess
        if lighting.toon:
            highlight = (highlight > 0.5).astype(np.float64)
        color += diffuse_weight * base * lit + fresnel * ((shininess + 2) / 8 * highlight)[:, None] * lit
    # environment reflection: sharp for smooth surfaces, blurring into the ambient for rough ones
    reflected = view_dirs - 2 * np.einsum("ij,ij->i", view_dirs, normals)[:, None] * normals
    sharpness = (1 - rough) ** 2
    environment = sharpness * lighting.environment(reflected) + (1 - sharpness) * ambient
    color += fresnel * environment * ao[:, None] * (1.0 if metal else 0.6)
    if material.kind == "fabric":  # soft sheen at grazing angles (velvet, upholstery)
        color += 0.25 * base * ambient * (1 - n_dot_v) ** 3
    return color
