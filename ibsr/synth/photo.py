"""Synthetic query photos: a shape rendered in colour, off the index rig, on a busy background.

The point is a domain gap like the real one (Pix3D photos vs grey renderings): per-part
coloured and textured materials, a random coloured light with cast shadows, backgrounds from
plain to cluttered, random camera pose and focal length, occluders and truncation, blur,
sensor noise and (when written) JPEG compression.

`render_query_photo(shape, rng)` = `render_photo(shape, sample_photo_params(shape, rng))`: the
params hold every random choice, so a photo can be re-rendered exactly, or with parts of the
degradation switched off (tests do that to check the mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ibsr.indexer.render import first_hits, normalize_mesh, orbit_position, pinhole_rays, ray_intersector

from .shapes import SynthShape

TEXTURES = ("plain", "wood", "noise", "checker")
BACKGROUNDS = ("solid", "gradient", "noise", "clutter")


@dataclass(frozen=True)
class PhotoCamera:
    """Pinhole camera looking at the normalized shape's centre (the origin)."""

    azimuth_deg: float
    elevation_deg: float
    distance: float
    fov_deg: float
    roll_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # principal point offset, half-frame units

    @property
    def eye(self) -> np.ndarray:
        return orbit_position(self.azimuth_deg, self.elevation_deg, self.distance)

    def rays(self, size: int):
        return pinhole_rays(self.eye, (0.0, 0.0, 0.0), self.fov_deg, size,
                            roll_deg=self.roll_deg, shift=self.shift)


@dataclass(frozen=True)
class Material:
    color: tuple[float, float, float]      # albedo, linear 0..1
    texture: str = "plain"                 # one of TEXTURES
    scale: float = 8.0                     # pattern frequency on the unit-sphere shape
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)  # wood grain / stripe direction
    specular: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class PhotoParams:
    camera: PhotoCamera
    materials: tuple[Material, ...]        # one per entry of part_material
    part_material: tuple[int, ...]         # material index of each of the shape's parts
    light_dir: tuple[float, float, float]  # towards the light, world frame
    light_color: tuple[float, float, float]
    ambient: tuple[float, float, float]
    shadows: bool = True
    background: str = "solid"
    background_seed: int = 0
    occluder: dict | None = None           # blob relative to the object's box (see _occluder_mask)
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0               # sensor noise, 0..255 units
    noise_seed: int = 0
    jpeg_quality: int = 90                 # used when the photo is written
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- sampling

def _random_color(rng, saturation=(0.1, 0.8), value=(0.2, 0.95)) -> tuple[float, float, float]:
    hsv = np.uint8([[[rng.integers(0, 180), 255 * rng.uniform(*saturation), 255 * rng.uniform(*value)]]])
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return tuple(float(c) for c in rgb)


def _random_unit(rng) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    return tuple(float(c) for c in v / np.linalg.norm(v))


def sample_material(rng) -> Material:
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    return Material(color=_random_color(rng, value=(0.35, 0.95)), texture=texture, scale=float(rng.uniform(4, 25)),
                    axis=_random_unit(rng), specular=float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.5)])),
                    seed=int(rng.integers(2**31)))


def sample_camera(rng, truncate: bool) -> PhotoCamera:
    """A pose off the index rig: any azimuth, elevation 5-45 deg, focal length 25-65 deg fov,
    the bounding sphere filling 55-95% of the frame, a little roll; truncated photos push the
    object partly out of the frame."""
    fov = float(rng.uniform(25.0, 65.0))
    fill = float(rng.uniform(0.55, 0.95))
    half = math.tan(math.radians(fov) / 2)
    distance = 1.0 / math.sin(math.atan(fill * half))  # sphere's image radius = fill
    if truncate:
        angle = rng.uniform(0, 2 * math.pi)
        amount = 1.0 - fill + float(rng.uniform(0.15, 0.45)) * fill
        shift = (amount * math.cos(angle), amount * math.sin(angle))
    else:
        slack = max(0.0, 1.0 - fill) * 0.8
        shift = tuple(float(s) for s in rng.uniform(-slack, slack, size=2))
    return PhotoCamera(azimuth_deg=float(rng.uniform(0, 360)), elevation_deg=float(rng.uniform(5, 45)),
                       distance=distance, fov_deg=fov, roll_deg=float(rng.normal(0, 4)),
                       shift=(float(shift[0]), float(shift[1])))


def sample_photo_params(shape: SynthShape, rng, occlusion_prob: float = 0.3,
                        truncation_prob: float = 0.15) -> PhotoParams:
    n_materials = int(rng.integers(1, 4))
    materials = tuple(sample_material(rng) for _ in range(n_materials))
    part_material = tuple(int(rng.integers(n_materials)) for _ in shape.part_names)
    elevation = rng.uniform(0.3, 1.4)  # light from above the horizon, any side
    azimuth = rng.uniform(0, 2 * math.pi)
    light_dir = (math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                 math.cos(elevation) * math.cos(azimuth))
    warmth = rng.uniform(-0.15, 0.15)  # warm (tungsten) to cool (daylight) light
    strength = rng.uniform(0.8, 1.3)
    light_color = tuple(float(strength * c) for c in (1 + warmth, 1.0, 1 - warmth))
    ambient_level = rng.uniform(0.2, 0.45)
    ambient = tuple(float(ambient_level * c) for c in (1 - warmth / 2, 1.0, 1 + warmth / 2))
    occluder = None
    if rng.random() < occlusion_prob:
        occluder = dict(center=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
                        radius=float(rng.uniform(0.12, 0.3)), corners=int(rng.integers(5, 10)),
                        color=_random_color(rng), seed=int(rng.integers(2**31)))
    return PhotoParams(
        camera=sample_camera(rng, truncate=rng.random() < truncation_prob),
        materials=materials, part_material=part_material, light_dir=light_dir,
        light_color=light_color, ambient=ambient, shadows=bool(rng.random() < 0.8),
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        background_seed=int(rng.integers(2**31)), occluder=occluder,
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.4, 1.2)])),
        noise_sigma=float(rng.uniform(0.0, 4.0)), noise_seed=int(rng.integers(2**31)),
        jpeg_quality=int(rng.integers(60, 96)))


# ---------------------------------------------------------------- rendering

def _wave_noise(points: np.ndarray, scale: float, seed: int, waves: int = 6) -> np.ndarray:
    """Smooth solid noise in [-1, 1]: a sum of random plane waves (cheap, no lattice)."""
    rng = np.random.default_rng(seed)
    freqs = rng.normal(size=(waves, 3)) * scale
    phases = rng.uniform(0, 2 * math.pi, size=waves)
    return np.sin(points @ freqs.T + phases).mean(axis=1) * math.sqrt(2.0)


def albedo(material: Material, points: np.ndarray) -> np.ndarray:
    """Solid texture evaluated at 3D hit points (no UVs needed): (N, 3) colours."""
    base = np.asarray(material.color)[None, :]
    if material.texture == "plain":
        return np.repeat(base, len(points), axis=0)
    if material.texture == "wood":  # rings along the grain axis, wobbled by noise
        grain = points @ np.asarray(material.axis)
        wobble = _wave_noise(points, material.scale / 4, material.seed)
        rings = 0.5 + 0.5 * np.sin(material.scale * 2 * grain + 2.0 * wobble)
        return base * (0.65 + 0.35 * rings[:, None] ** 3)
    if material.texture == "noise":
        return base * (0.75 + 0.25 * _wave_noise(points, material.scale, material.seed)[:, None])
    cells = np.floor(points * material.scale / 2).astype(np.int64).sum(axis=1) % 2  # checker
    return base * np.where(cells[:, None] == 1, 1.0, 0.6)


def render_layers(shape: SynthShape, params: PhotoParams, size: int):
    """Ray cast the photo: (colour of object pixels or 0 as float HxWx3, hit mask HxW)."""
    mesh = normalize_mesh(shape.mesh)
    intersector = ray_intersector(mesh)
    origins, directions = params.camera.rays(size)
    tri, points = first_hits(mesh, origins, directions, with_points=True, intersector=intersector)
    hit = tri >= 0
    color = np.zeros((len(tri), 3))
    if hit.any():
        color[hit] = _shade(mesh, shape, params, tri[hit], points[hit], directions[hit], intersector)
    return color.reshape(size, size, 3), hit.reshape(size, size)


def _shade(mesh, shape, params, tri, points, view_dirs, intersector) -> np.ndarray:
    normals = np.asarray(mesh.face_normals)[tri]
    # face the viewer: meshes with flipped normals shade like clean ones
    normals = np.where((np.einsum("ij,ij->i", normals, view_dirs) > 0)[:, None], -normals, normals)
    light = np.asarray(params.light_dir)
    diffuse = np.clip(normals @ light, 0.0, None)
    if params.shadows:
        lit = diffuse > 0
        start = points[lit] + normals[lit] * 1e-4  # step off the surface before the shadow ray
        blocked, _ = first_hits(mesh, start, np.broadcast_to(light, start.shape).copy(),
                                intersector=intersector)
        diffuse[np.flatnonzero(lit)[blocked >= 0]] *= 0.15
    half_vec = light[None, :] - view_dirs
    half_vec /= np.linalg.norm(half_vec, axis=1, keepdims=True)
    highlight = np.clip(np.einsum("ij,ij->i", normals, half_vec), 0, None) ** 30 * (diffuse > 0)

    color = np.empty((len(tri), 3))
    part_of_face = shape.face_parts[tri]
    material_of_part = np.asarray(params.part_material)
    for index, material in enumerate(params.materials):
        sel = material_of_part[part_of_face] == index
        if not sel.any():
            continue
        base = albedo(material, points[sel])
        color[sel] = (base * (np.asarray(params.ambient) + diffuse[sel, None] * np.asarray(params.light_color))
                      + material.specular * highlight[sel, None] * np.asarray(params.light_color))
    return np.clip(color, 0.0, 1.0)


def photo_background(params: PhotoParams, size: int) -> np.ndarray:
    """The photo's background, float HxWx3 in 0..1, a function of the params only."""
    rng = np.random.default_rng(params.background_seed)
    c0, c1 = np.asarray(_random_color(rng)), np.asarray(_random_color(rng))
    if params.background == "solid":
        return np.broadcast_to(c0, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip((math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5)) + 0.5, 0, 1)
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    if params.background == "gradient":
        return image
    if params.background == "noise":
        cells = int(rng.integers(4, 24))
        coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        return np.clip(image * (1 + 0.35 * smooth[..., None]), 0, 1)
    # clutter: rectangles, discs and lines in random colours, like a room behind the object
    canvas = (image * 255).astype(np.uint8)
    for _ in range(int(rng.integers(5, 20))):
        color = tuple(int(255 * c) for c in _random_color(rng))
        kind = int(rng.integers(3))
        p = rng.integers(0, size, size=4)
        if kind == 0:
            cv2.rectangle(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), color, -1)
        elif kind == 1:
            cv2.circle(canvas, (int(p[0]), int(p[1])), int(rng.integers(3, max(4, size // 5))), color, -1)
        else:
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), color,
                     int(rng.integers(1, max(2, size // 40))))
    return cv2.GaussianBlur(canvas, (0, 0), 1.0).astype(np.float64) / 255.0


def _occluder_mask(occluder: dict, hit: np.ndarray) -> np.ndarray:
    """A random blob placed over the object's bounding box (coordinates relative to it)."""
    size = hit.shape[0]
    ys, xs = np.nonzero(hit)
    if len(xs) == 0:
        return np.zeros_like(hit)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    extent = max(x1 - x0, y1 - y0) + 1
    cx = x0 + occluder["center"][0] * (x1 - x0)
    cy = y0 + occluder["center"][1] * (y1 - y0)
    rng = np.random.default_rng(occluder["seed"])
    n = occluder["corners"]
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=n))
    radii = occluder["radius"] * extent * rng.uniform(0.6, 1.3, size=n)
    polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def render_photo(shape: SynthShape, params: PhotoParams, size: int = 256):
    """Render one query photo: (rgb uint8 HxWx3, mask bool HxW).

    The mask is exactly the pixels whose ray hit the shape and are not covered by the
    occluder; background pixels keep the background unless blur/noise are on.
    """
    color, hit = render_layers(shape, params, size)
    image = photo_background(params, size)
    image[hit] = color[hit]
    mask = hit.copy()
    if params.occluder is not None:
        cover = _occluder_mask(params.occluder, hit)
        rng = np.random.default_rng(params.occluder["seed"] + 1)
        shade = 0.75 + 0.25 * rng.uniform(size=(8, 8, 1)).astype(np.float32)
        shade = cv2.resize(shade, (size, size), interpolation=cv2.INTER_LINEAR)[..., None]
        image[cover] = (np.asarray(params.occluder["color"]) * shade)[cover]
        mask &= ~cover
    if params.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), params.blur_sigma)
    if params.noise_sigma > 0:
        noise = np.random.default_rng(params.noise_seed).normal(0, params.noise_sigma / 255, image.shape)
        image = image + noise
    rgb = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return rgb, mask


def render_query_photo(shape: SynthShape, rng, size: int = 256):
    """Random query photo of `shape`: (rgb uint8 HxWx3, mask bool HxW)."""
    rgb, mask, _ = sample_query_photo(shape, rng, size)
    return rgb, mask


def sample_query_photo(shape: SynthShape, rng, size: int = 256, min_visible: float = 0.02,
                       tries: int = 5):
    """Like `render_query_photo`, also returning the `PhotoParams` drawn (JPEG quality etc.).

    Redraws (up to `tries` times, from the same rng, so still deterministic) when less than
    `min_visible` of the frame shows the object (a thin lamp, truncated and occluded).
    """
    for _ in range(tries):
        params = sample_photo_params(shape, rng)
        rgb, mask = render_photo(shape, params, size)
        if mask.mean() >= min_visible:
            break
    return rgb, mask, params
