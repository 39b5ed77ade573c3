"""What surrounds the object in a synthetic query photo: floor, walls, sky, flat backdrops, occluders.

Scene surfaces are analytic planes (a floor at the object's feet, one wall or a corner of two
behind it), intersected with the camera rays in numpy; their textures are procedural in metres
(`Backdrop`), so planks, tiles and bricks keep a real size next to the object whatever the
normalization, and every texture fades detail finer than a pixel (no moire on a far floor).
Wall decor (pictures, a window, a door, shop shelves) is drawn once into a small image in the
wall's own coordinates and looked up like a texture.

Everything here is a function of its arguments: no global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import trimesh

from .photo_materials import random_color, srgb_to_linear, wave_noise

FLAT_BACKGROUNDS = ("solid", "gradient", "noise", "clutter")  # a 2D picture behind the object
SCENE_BACKGROUNDS = ("room", "studio", "outdoor", "stage")     # a floor (and walls) in 3D
FLOORS = ("planks", "tiles", "checker", "carpet", "concrete", "paper",  # indoor
          "grass", "gravel", "paving", "asphalt")                        # outdoor
WALLS = ("paint", "stripes", "brick", "panel", "paper")
DECOR = ("none", "frames", "window", "shelves", "door")
WOOD_FLOOR_COLORS = ((0.72, 0.55, 0.38), (0.55, 0.38, 0.24), (0.82, 0.70, 0.55), (0.40, 0.27, 0.18),
                     (0.62, 0.50, 0.40), (0.30, 0.22, 0.16), (0.75, 0.72, 0.66))  # sRGB


@dataclass(frozen=True)
class Backdrop:
    """The 3D surroundings of a `room`, `studio`, `outdoor` or `stage` photo (sRGB colours)."""

    floor: str = "concrete"                       # one of FLOORS
    floor_colors: tuple = ((0.55, 0.55, 0.55), (0.35, 0.35, 0.35))
    floor_scale: float = 0.2                      # metres: plank width, tile side, stone size
    floor_angle: float = 0.0                      # degrees: pattern rotation about +y
    wall: str = "paint"                           # one of WALLS
    wall_colors: tuple = ((0.85, 0.85, 0.82), (0.95, 0.95, 0.95))
    walls: tuple = ()                             # (azimuth_deg of the normal, distance) per wall
    skirting: float = 0.0                         # skirting board height, metres (0 = none)
    decor: str = "none"                           # one of DECOR
    seed: int = 0
    gloss: float = 0.0                            # floor reflectivity (polished tiles, varnish)


@dataclass(frozen=True)
class Plane:
    point: np.ndarray
    normal: np.ndarray   # towards the camera side
    u_axis: np.ndarray   # texture axes in the plane
    v_axis: np.ndarray

    def intersect(self, eye: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Ray parameter of each ray's hit (inf where it runs away from the plane)."""
        facing = directions @ self.normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(facing < -1e-9, ((self.point - eye) @ self.normal) / facing, np.inf)
        return np.where(t > 0, t, np.inf)

    def coords(self, points: np.ndarray) -> np.ndarray:
        rel = points - self.point
        return np.stack([rel @ self.u_axis, rel @ self.v_axis], axis=1)


def floor_plane(floor_y: float, angle_deg: float = 0.0) -> Plane:
    a = math.radians(angle_deg)
    return Plane(np.array([0.0, floor_y, 0.0]), np.array([0.0, 1.0, 0.0]),
                 np.array([math.cos(a), 0.0, -math.sin(a)]), np.array([math.sin(a), 0.0, math.cos(a)]))


def wall_plane(azimuth_deg: float, distance: float, floor_y: float) -> Plane:
    """A vertical wall `distance` from the origin whose normal points to `azimuth_deg`;
    texture coordinates: along the wall, and height above the floor."""
    a = math.radians(azimuth_deg)
    normal = np.array([math.sin(a), 0.0, math.cos(a)])
    return Plane(np.array([0.0, floor_y, 0.0]) - distance * normal, normal,
                 np.array([math.cos(a), 0.0, -math.sin(a)]), np.array([0.0, 1.0, 0.0]))


# ---------------------------------------------------------------- texture helpers

def cell_random(i: np.ndarray, j: np.ndarray, seed: int, k: int = 0) -> np.ndarray:
    """A uniform [0, 1) value per integer cell (i, j): an integer hash, so no tables."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (seed * 83492791 + k * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float64) / float(1 << 24)


def line_darkness(distance: np.ndarray, width: float, footprint: np.ndarray) -> np.ndarray:
    """Coverage (0..1) of a line `width` wide at `distance` from the pixel centre, box-filtered
    over the pixel footprint: thin far lines average out instead of flickering."""
    fp = np.maximum(footprint, 1e-6)
    overlap = np.minimum(distance + fp / 2, width / 2) - np.maximum(distance - fp / 2, -width / 2)
    return np.clip(overlap / fp, 0, 1)


def _grid_distance(x: np.ndarray, period: float) -> np.ndarray:
    """Distance to the nearest multiple of `period`."""
    r = np.mod(x, period)
    return np.minimum(r, period - r)


def _mix(c0, c1, t: np.ndarray) -> np.ndarray:
    c0, c1 = np.asarray(c0, float), np.asarray(c1, float)
    return c0[None, :] * (1 - t[:, None]) + c1[None, :] * t[:, None]


# ---------------------------------------------------------------- floors and walls

def floor_albedo(backdrop: Backdrop, uv: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear albedo (N, 3) of the floor at plane coordinates `uv` (metres); `fp` = pixel size."""
    u, v = uv[:, 0], uv[:, 1]
    c0, c1 = backdrop.floor_colors
    s, seed, kind = backdrop.floor_scale, backdrop.seed, backdrop.floor
    if kind == "planks":
        length = s * 7
        i = np.floor(u / s)
        along = v + cell_random(i, i, seed) * length
        j = np.floor(along / length)
        color = _mix(c0, c1, cell_random(i, j, seed, 1) ** 1.5)
        phase = 37.0 * cell_random(i, j, seed, 2)  # each board its own grain
        streaks = wave_noise(np.column_stack([u * 40, (along + phase) * 1.5]), 1.0, seed, footprint=fp * 40)
        gaps = np.maximum(line_darkness(_grid_distance(u, s), 0.003, fp),
                          line_darkness(_grid_distance(along, length), 0.003, fp))
        tone = (0.9 + 0.1 * streaks) * (1 - 0.55 * gaps)
    elif kind in ("tiles", "checker", "paving"):
        i, j = np.floor(u / s), np.floor(v / s)
        if kind == "checker":
            color = np.where(((i + j) % 2 == 0)[:, None], np.asarray(c0)[None], np.asarray(c1)[None])
            grout_color, grout = np.asarray(c1), 0.002
        else:
            color = np.asarray(c0)[None, :] * (0.9 + 0.2 * cell_random(i, j, seed))[:, None]
            grout_color, grout = np.asarray(c1), 0.006 if kind == "tiles" else 0.015
        lines = np.maximum(line_darkness(_grid_distance(u, s), grout, fp),
                           line_darkness(_grid_distance(v, s), grout, fp))
        color = color * (1 - lines[:, None]) + grout_color[None, :] * lines[:, None]
        tone = 1 + 0.05 * wave_noise(uv, 2.0, seed, footprint=fp)
        if kind == "paving":
            tone = tone + 0.12 * wave_noise(uv, 12.0, seed + 1, footprint=fp)
    elif kind in ("carpet", "grass", "gravel", "asphalt"):
        fine = {"carpet": 120.0, "grass": 60.0, "gravel": 90.0, "asphalt": 150.0}[kind]
        coarse = {"carpet": 0.08, "grass": 0.25, "gravel": 0.2, "asphalt": 0.12}[kind]
        color = _mix(c0, c1, 0.5 + 0.5 * wave_noise(uv, 1.5, seed + 2))
        tone = 1 + coarse * wave_noise(uv, 3.0, seed) + 0.15 * wave_noise(uv, fine, seed + 1, waves=8, footprint=fp)
    else:  # concrete, studio paper: smooth, a little cloudy
        color = _mix(c0, c1, 0.5 + 0.5 * wave_noise(uv, 0.8, seed))
        tone = 1 + (0.06 if kind == "concrete" else 0.015) * wave_noise(uv, 4.0, seed + 1, footprint=fp)
    return srgb_to_linear(np.clip(color * tone[:, None], 0, 1))


def wall_albedo(backdrop: Backdrop, ah: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Linear albedo of a wall at (along, height above floor) in metres."""
    a, h = ah[:, 0], ah[:, 1]
    c0, c1 = backdrop.wall_colors
    seed, kind = backdrop.seed, backdrop.wall
    color = np.repeat(np.asarray(c0, float)[None, :], len(a), axis=0)
    if kind == "stripes":
        width = np.random.default_rng(seed).uniform(0.05, 0.2)  # metres per stripe
        t = np.clip(np.sin(math.pi * a / width) * width / (math.pi * np.maximum(fp, 1e-6)), -0.5, 0.5) + 0.5
        color = _mix(c0, c1, t)
    elif kind == "brick":
        row = np.floor(h / 0.075)
        shifted = a + 0.1125 * (row % 2)
        col = np.floor(shifted / 0.225)
        color = np.asarray(c0)[None, :] * (0.8 + 0.35 * cell_random(row, col, seed))[:, None]
        mortar = np.maximum(line_darkness(_grid_distance(h, 0.075), 0.01, fp),
                            line_darkness(_grid_distance(shifted, 0.225), 0.01, fp))
        color = color * (1 - mortar[:, None]) + np.asarray(c1)[None, :] * mortar[:, None]
    elif kind == "panel":  # wainscot: vertical boards below a rail, paint above
        low = h < 0.9
        grooves = line_darkness(_grid_distance(a, 0.12), 0.004, fp)
        color[low] = np.asarray(c1)[None, :] * (1 - 0.35 * grooves[low, None])
        rail = line_darkness(np.abs(h - 0.9), 0.03, fp)
        color = color * (1 - rail[:, None]) + np.asarray(c1)[None, :] * 0.85 * rail[:, None]
    tone = 1 + 0.03 * wave_noise(ah, 1.0, seed + 5) + 0.03 * wave_noise(ah, 30.0, seed + 6, footprint=fp)
    if backdrop.skirting > 0:
        board = np.clip((backdrop.skirting - h) / np.maximum(fp, 1e-6) + 0.5, 0, 1)
        color = color * (1 - board[:, None]) + np.asarray(c1)[None, :] * board[:, None]
    return srgb_to_linear(np.clip(color * tone[:, None], 0, 1))


DECOR_PX_PER_M = 60  # resolution of the decor image (wall coordinates)
DECOR_SPAN = (-3.5, 3.5, 0.0, 2.6)  # metres: along the wall, height


def decor_image(backdrop: Backdrop) -> tuple[np.ndarray, np.ndarray] | None:
    """(RGBA albedo in sRGB with coverage, emission HxW) of the wall decor, or None.

    Pictures and doors are albedo; a window is emissive (daylight coming in)."""
    if backdrop.decor == "none":
        return None
    rng = np.random.default_rng(backdrop.seed + 7)
    a0, a1, h0, h1 = DECOR_SPAN
    w, h = int((a1 - a0) * DECOR_PX_PER_M), int((h1 - h0) * DECOR_PX_PER_M)
    rgba = np.zeros((h, w, 4), np.float32)
    emit = np.zeros((h, w), np.float32)

    def rect(x0, y0, x1, y1, color, target=rgba):
        p0 = (int((x0 - a0) * DECOR_PX_PER_M), int((h1 - y1) * DECOR_PX_PER_M))
        p1 = (int((x1 - a0) * DECOR_PX_PER_M), int((h1 - y0) * DECOR_PX_PER_M))
        cv2.rectangle(target, p0, p1, color, -1)

    if backdrop.decor == "frames":
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(-2.5, 2.5), rng.uniform(1.3, 1.8)
            fw, fh, border = rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.015, 0.05)
            rect(cx - fw, cy - fh, cx + fw, cy + fh, (*random_color(rng, (0, 0.3), (0.05, 0.9)), 1.0))
            inner = (cx - fw + border, cy - fh + border, cx + fw - border, cy + fh - border)
            rect(*inner, (*random_color(rng), 1.0))
            for _ in range(int(rng.integers(2, 6))):  # a few blotches: an abstract print
                x, y = rng.uniform(inner[0], inner[2]), rng.uniform(inner[1], inner[3])
                r = rng.uniform(0.03, 0.2)
                rect(max(inner[0], x - r), max(inner[1], y - r), min(inner[2], x + r), min(inner[3], y + r),
                     (*random_color(rng), 1.0))
    elif backdrop.decor == "window":  # emissive panes in a white frame, a mullion and a transom
        cx, half_w, pane_h, sill = rng.uniform(-2, 2), rng.uniform(0.5, 0.9), rng.uniform(0.6, 0.8), 0.85
        top = sill + 2 * pane_h
        rect(cx - half_w - 0.05, sill - 0.05, cx + half_w + 0.05, top + 0.05, (0.95, 0.95, 0.95, 1.0))
        rect(cx - half_w, sill, cx + half_w, top, (0.0, 0.0, 0.0, 1.0))
        rect(cx - half_w, sill, cx + half_w, top, 1.0, emit)
        mullion = (cx - 0.02, sill, cx + 0.02, top)
        transom = (cx - half_w, sill + pane_h - 0.02, cx + half_w, sill + pane_h + 0.02)
        for bar in (mullion, transom):
            rect(*bar, (0.95, 0.95, 0.95, 1.0))
            rect(*bar, 0.0, emit)
    elif backdrop.decor == "door":
        cx = rng.uniform(-2.5, 2.5)
        rect(cx - 0.5, 0.0, cx + 0.5, 2.1, (*random_color(rng, (0, 0.2), (0.6, 0.95)), 1.0))
        rect(cx - 0.45, 0.0, cx + 0.45, 2.05, (*random_color(rng, (0, 0.4), (0.3, 0.95)), 1.0))
        rect(cx + 0.33, 0.95, cx + 0.4, 1.0, (0.7, 0.7, 0.7, 1.0))
    else:  # shelves: a shop wall of boards and products
        board_color = (*random_color(rng, (0, 0.3), (0.3, 0.95)), 1.0)
        for level in np.arange(0.25, 2.3, rng.uniform(0.35, 0.5)):
            x = a0
            while x < a1:
                pw, ph = rng.uniform(0.05, 0.3), rng.uniform(0.08, 0.3)
                if rng.random() < 0.85:
                    rect(x, level, x + pw, level + ph, (*random_color(rng), 1.0))
                x += pw + rng.uniform(0.0, 0.05)
            rect(a0, level - 0.03, a1, level, board_color)
    rgba = cv2.GaussianBlur(rgba, (0, 0), 0.7)
    emit = cv2.GaussianBlur(emit, (0, 0), 0.7)
    return rgba, emit


def lookup(image: np.ndarray, x: np.ndarray, y: np.ndarray, outside: float = 0.0) -> np.ndarray:
    """Bilinear samples of `image` at pixel coordinates (x, y) per point; `outside` beyond it.
    (cv2.remap, with the points laid out in rows: it refuses maps wider than 32767.)"""
    n = len(x)
    rows = -(-n // 256) if n else 1
    grid = np.zeros((2, rows * 256), np.float32)
    grid[0, :n], grid[1, :n] = x, y
    out = cv2.remap(image, grid[0].reshape(rows, 256), grid[1].reshape(rows, 256), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=outside)
    return out.reshape(rows * 256, *image.shape[2:])[:n]


def sample_decor(decor, ah: np.ndarray):
    """(RGBA, emission) of the decor image at wall coordinates (N, 2); zeros outside it."""
    rgba, emit = decor
    a0, a1, h0, h1 = DECOR_SPAN
    x = (ah[:, 0] - a0) * DECOR_PX_PER_M - 0.5
    y = (h1 - ah[:, 1]) * DECOR_PX_PER_M - 0.5
    return lookup(rgba, x, y), lookup(emit, x, y)


def sky_radiance(directions: np.ndarray, seed: int, sun_dir: np.ndarray) -> np.ndarray:
    """Outdoor sky (linear): blue gradient, clouds, a sun glow, a dark tree/building line at
    the horizon; below the horizon a hazy ground colour (only reached by reflections)."""
    up = directions[:, 1]
    zenith, horizon = srgb_to_linear([0.30, 0.52, 0.85]), srgb_to_linear([0.78, 0.85, 0.92])
    t = np.clip(up, 0, 1) ** 0.6
    color = horizon[None, :] * (1 - t[:, None]) + zenith[None, :] * t[:, None]
    flat = directions[:, [0, 2]] / np.maximum(up, 0.05)[:, None]  # cloud layer coordinates
    clouds = np.clip(wave_noise(flat, 0.8, seed, waves=10) * 1.4 - 0.2, 0, 1) * (up > 0)
    color = color * (1 - 0.8 * clouds[:, None]) + 0.9 * clouds[:, None]
    to_sun = directions @ sun_dir - 1
    color += (4.0 * np.exp(to_sun / 0.002) + 0.25 * np.exp(to_sun / 0.1))[:, None]  # the sun and its glow
    azimuth = np.arctan2(directions[:, 0], directions[:, 2])
    skyline = 0.03 + 0.06 * (1 + np.sin(azimuth * 3 + seed % 7) * 0.5 + wave_noise(azimuth[:, None], 8.0, seed + 3))
    treeline = (up < skyline) & (up > -0.02)
    leaves = 1 + 0.3 * wave_noise(azimuth[treeline, None], 60.0, seed)
    color[treeline] = srgb_to_linear([0.16, 0.22, 0.14]) * leaves[:, None]
    color[up <= -0.02] = srgb_to_linear([0.35, 0.38, 0.30])
    return color


# ---------------------------------------------------------------- flat backgrounds

def flat_background(kind: str, seed: int, size: int) -> np.ndarray:
    """A 2D backdrop (solid, gradient, noise, clutter): float HxWx3 sRGB in 0..1."""
    rng = np.random.default_rng(seed)
    c0, c1 = np.asarray(random_color(rng)), np.asarray(random_color(rng))
    if kind == "solid":
        return np.broadcast_to(c0, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip((math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5)) + 0.5, 0, 1)
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    if kind == "gradient":
        return image
    if kind == "noise":
        cells = int(rng.integers(4, 24))
        coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        return np.clip(image * (1 + 0.35 * smooth[..., None]), 0, 1)
    # clutter: rectangles, discs and lines in random colours, like a busy room behind the object
    canvas = (image * 255).astype(np.uint8)
    for _ in range(int(rng.integers(5, 20))):
        color = tuple(int(255 * c) for c in random_color(rng))
        kind_of = int(rng.integers(3))
        p = rng.integers(0, size, size=4)
        if kind_of == 0:
            cv2.rectangle(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), color, -1)
        elif kind_of == 1:
            cv2.circle(canvas, (int(p[0]), int(p[1])), int(rng.integers(3, max(4, size // 5))), color, -1)
        else:
            cv2.line(canvas, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), color,
                     int(rng.integers(1, max(2, size // 40))))
    return cv2.GaussianBlur(canvas, (0, 0), 1.0).astype(np.float64) / 255.0


# ---------------------------------------------------------------- occluders

OCCLUDER_SOLIDS = ("box", "cylinder", "sphere", "object")
# what may stand in front of the photographed object: furniture in front of large objects,
# tabletop things in front of small ones (those that exist in this version of the catalog)
LARGE_OCCLUDERS = ("chair", "table", "stool", "sofa", "cabinet", "lamp", "desk", "bed")
SMALL_OCCLUDERS = ("mug", "bottle", "vase", "bowl", "bucket", "kettle", "glass", "plant", "book", "lamp")


def occluder_mesh(occluder: dict, floor_y: float) -> trimesh.Trimesh:
    """The mesh of a 3D occluder standing on the floor in front of the object.

    `occluder`: kind (box, cylinder, sphere, object), position (x, z) on the floor, size
    (half width, height, half depth), yaw (degrees); an object's category and seed (it is
    scaled to `size`'s height)."""
    rx, height, rz = occluder["size"]
    kind = occluder["kind"]
    if kind == "box":
        mesh = trimesh.creation.box(extents=(2 * rx, height, 2 * rz))
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(radius=rx, height=height, sections=32,
                                         transform=trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))
    elif kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=rx)
    else:  # another object in front of the photographed one
        from .shapes import make_shape
        other = make_shape(occluder["category"], np.random.default_rng(occluder["seed"])).mesh
        vertices = (other.vertices - (other.bounds[0] + other.bounds[1]) / 2) * (height / max(other.extents[1], 1e-9))
        mesh = trimesh.Trimesh(vertices, other.faces, process=False)
    yaw = trimesh.transformations.rotation_matrix(math.radians(occluder["yaw"]), [0, 1, 0])
    mesh = mesh.copy()
    mesh.apply_transform(yaw)
    mesh.apply_translation([occluder["position"][0], floor_y - mesh.bounds[0][1], occluder["position"][1]])
    return mesh


def blob_mask(occluder: dict, hit: np.ndarray) -> np.ndarray:
    """A random polygon blob placed over the object's bounding box (coordinates relative to it)."""
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
