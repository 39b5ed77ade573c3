"""Lights of a synthetic query photo and the backdrop they light (see `photo.py`).

`make_lighting` turns the params into what shading needs (lights, sky and ground ambient, an
environment for reflections); `plate_radiance` is everything but the object and the occluder:
floor, walls and sky (or a flat picture), lit with soft shadow maps (jittered shadow rays on a
grid in each plane, stratified over the light's disk, blurred) and a contact-occlusion map
under the object (how much sky the floor sees: rays straight up).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import trimesh

from ibsr.geometry.render import first_hits

from .photo_materials import Lighting, srgb_to_linear
from .photo_scene import (FLAT_BACKGROUNDS, decor_image, flat_background, floor_albedo, floor_plane, lookup,
                          sample_decor, sky_radiance, wall_albedo, wall_plane)

SHADOW_CELLS = 128      # shadow map resolution across its longest side
OCCLUSION_CELLS = 96    # contact-occlusion map resolution
SKY_GAIN = 1.6          # outdoor sky brightness relative to the sky light on surfaces


def jittered_directions(direction, softness: float, count: int, rng, sector=(0, 1)) -> np.ndarray:
    """`count` unit directions spread over a cone of angular radius `softness` (an area
    light); `sector=(i, n)` keeps them in the i-th of n slices of the cone (stratification)."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    b1 = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
    b1 /= np.linalg.norm(b1)
    b2 = np.cross(d, b1)
    r = softness * np.sqrt(rng.random(count))
    theta = 2 * math.pi * (sector[0] + rng.random(count)) / sector[1]
    out = d[None, :] + (r * np.cos(theta))[:, None] * b1 + (r * np.sin(theta))[:, None] * b2
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def rays_blocked(casters, origins, directions) -> np.ndarray:
    """Whether each (shadow) ray hits any of the casters."""
    hit = np.zeros(len(origins), bool)
    for caster in casters:
        hit |= caster.blocks(origins, directions)
    return hit


class PlaneMap:
    """A float image over a rectangle of a plane's (u, v) coordinates, sampled bilinearly."""

    def __init__(self, image: np.ndarray, lo: np.ndarray, cell: float, outside: float):
        self.image, self.lo, self.cell, self.outside = image.astype(np.float32), lo, cell, outside

    def sample(self, uv: np.ndarray) -> np.ndarray:
        x = (uv[:, 0] - self.lo[0]) / self.cell
        y = (uv[:, 1] - self.lo[1]) / self.cell
        return lookup(self.image, x, y, self.outside).astype(np.float64)


def _grid(plane, lo, hi, cells):
    cell = float(max(hi - lo)) / cells
    nu, nv = (np.ceil((hi - lo) / cell).astype(int) + 1)
    u = lo[0] + np.arange(nu) * cell
    v = lo[1] + np.arange(nv) * cell
    uu, vv = np.meshgrid(u, v)
    points = plane.point + uu.reshape(-1, 1) * plane.u_axis + vv.reshape(-1, 1) * plane.v_axis
    return points + plane.normal * 1e-4, (nv, nu), cell


HARD_LIGHT = 0.03  # angular radius (rad) below which a light is a point: one shadow ray is enough


def shadow_map(plane, light_dir, softness: float, casters, seed: int) -> PlaneMap | None:
    """Visibility of the light on the part of `plane` where the casters' shadows can fall:
    4 jittered shadow rays per grid point, stratified over the light's disk (1 for a hard
    light)."""
    samples = 1 if softness < HARD_LIGHT else 4
    light = np.asarray(light_dir, float)
    facing = float(light @ plane.normal)
    if facing < 0.05 or not casters:
        return None
    corners = np.concatenate([trimesh.bounds.corners(c.mesh.bounds) for c in casters])
    height = (corners - plane.point) @ plane.normal
    if (height <= 0).all():
        return None
    projected = corners - light[None, :] * (np.maximum(height, 0) / facing)[:, None]
    uv = plane.coords(projected)
    pad = 0.05 + 2 * softness * max(height.max(), 0) / facing
    lo, hi = uv.min(axis=0) - pad, uv.max(axis=0) + pad
    points, shape, cell = _grid(plane, lo, hi, SHADOW_CELLS)
    rng = np.random.default_rng(seed)
    blocked = np.zeros(len(points))
    for stratum in range(samples):
        directions = jittered_directions(light, softness, len(points), rng, sector=(stratum, samples))
        blocked += rays_blocked(casters, points, directions)
    visible = 1 - (blocked / samples).reshape(shape)
    return PlaneMap(cv2.GaussianBlur(visible.astype(np.float32), (0, 0), 1.3), lo, cell, 1.0)


def contact_occlusion(floor, casters, metres: float) -> PlaneMap | None:
    """How much of the sky the floor sees near the object: dark right under and around its
    feet (contact shadow), a faint wide shadow under its body. 1 = open sky."""
    if not casters:
        return None
    corners = np.concatenate([trimesh.bounds.corners(c.mesh.bounds) for c in casters])
    uv = floor.coords(corners)
    lo, hi = uv.min(axis=0) - 0.4, uv.max(axis=0) + 0.4
    points, shape, cell = _grid(floor, lo, hi, OCCLUSION_CELLS)
    up = np.broadcast_to(floor.normal, points.shape).copy()
    height = np.full(len(points), np.inf)
    for caster in casters:
        tri, hits = first_hits(caster.mesh, points, up, with_points=True, intersector=caster.intersector)
        found = tri >= 0
        height[found] = np.minimum(height[found], (hits[found] - points[found]) @ floor.normal)
    height_m = height * metres
    near = np.exp(-height_m / 0.05).reshape(shape).astype(np.float32)
    broad = np.exp(-height_m / 0.35).reshape(shape).astype(np.float32)
    near = cv2.GaussianBlur(near, (0, 0), max(0.03 / metres / cell, 0.5))
    broad = cv2.GaussianBlur(broad, (0, 0), max(0.2 / metres / cell, 0.5))
    return PlaneMap(1 - np.clip(0.75 * near + 0.35 * broad, 0, 0.9), lo, cell, 1.0)


# ---------------------------------------------------------------- lighting

def make_lighting(params) -> Lighting:
    key = (np.asarray(params.light_dir, float), np.asarray(params.light_color, float))
    lights = [key] + [(np.asarray(d, float), np.asarray(c, float)) for d, c in params.fill_lights]
    sky, ground = np.asarray(params.ambient, float), np.asarray(params.ground_bounce, float)
    backdrop = params.backdrop
    if params.background == "outdoor":
        def environment(r):
            return SKY_GAIN * sky_radiance(r, params.background_seed, key[0]) * sky.mean()
    else:
        floor_albedo_mean = srgb_to_linear(backdrop.floor_colors[0]) if backdrop else np.full(3, 0.25)
        wall_albedo_mean = srgb_to_linear(backdrop.wall_colors[0]) if backdrop else np.full(3, 0.4)
        floor_light = 0.6 * floor_albedo_mean * (sky + key[1] * max(key[0][1], 0))
        wall_light = wall_albedo_mean * (sky + 0.5 * key[1])

        rng = np.random.default_rng(params.background_seed + 3)
        # bright windows / shop lights around the horizon: what chrome and gloss reflect
        panels = [(rng.uniform(-math.pi, math.pi), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.7))
                  for _ in range(int(rng.integers(1, 4)))]

        def environment(r):
            up = r[:, 1:2]
            low = np.clip((up + 0.3) / 0.35, 0, 1)
            high = np.clip((up - 0.3) / 0.5, 0, 1)
            color = floor_light * (1 - low) + wall_light * low
            color = color * (1 - high) + 1.2 * sky * high
            azimuth = np.arctan2(r[:, 0], r[:, 2])
            for centre, half_width, top in panels:
                off = np.abs((azimuth - centre + math.pi) % (2 * math.pi) - math.pi)
                inside = (off < half_width) & (up[:, 0] > 0.0) & (up[:, 0] < top)
                color = color + 4.0 * inside[:, None] * (sky + 0.3 * key[1])[None, :]
            for direction, light_color in lights:  # the lamps and windows themselves
                spread = 0.02 + params.light_softness ** 2
                color = color + 6 * light_color[None, :] * np.exp((r @ direction - 1) / spread)[:, None]
            return color
    return Lighting(lights=lights, sky=sky, ground=ground, environment=environment, toon=params.posterize > 0)


def _smoothstep(lo, hi, x):
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------- backdrop

def plate_radiance(params, eye, directions, size: int, lighting: Lighting, casters) -> np.ndarray:
    """Linear radiance (size*size, 3) of everything but the object and the occluder: the
    nearest of floor and walls (or the sky beyond them), or a flat picture."""
    kind = params.background
    if kind in FLAT_BACKGROUNDS:  # a picture lit roughly like the object
        light = lighting.sky + 0.6 * lighting.lights[0][1]
        picture = srgb_to_linear(flat_background(kind, params.background_seed, size))
        return picture.reshape(-1, 3) * light[None, :]
    backdrop = params.backdrop
    planes = [floor_plane(params.floor_y, backdrop.floor_angle)]
    planes += [wall_plane(az, distance, params.floor_y) for az, distance in backdrop.walls]
    distances = np.stack([plane.intersect(eye, directions) for plane in planes])
    which, t = distances.argmin(axis=0), distances.min(axis=0)
    radiance = np.zeros((len(directions), 3))
    miss = ~np.isfinite(t)
    if miss.any():
        if kind == "outdoor":
            radiance[miss] = SKY_GAIN * lighting.sky.mean() * sky_radiance(directions[miss], params.background_seed,
                                                                            lighting.lights[0][0])
        else:
            radiance[miss] = srgb_to_linear(backdrop.wall_colors[0]) * lighting.sky
    pixel = 2 * math.tan(math.radians(params.camera.fov_deg) / 2) / size
    decor = decor_image(backdrop)
    for index, plane in enumerate(planes):
        sel = np.flatnonzero((which == index) & ~miss)
        if len(sel) == 0:
            continue
        points = eye + t[sel, None] * directions[sel]
        uv = plane.coords(points)
        footprint = t[sel] * pixel / np.maximum(np.abs(directions[sel] @ plane.normal), 0.05) * params.metres_per_unit
        color, emission = _plane_albedo(params, index, uv * params.metres_per_unit, footprint, decor, lighting)
        # the studio sweep curves up behind the object: its wall is lit like the floor
        normal = planes[0].normal if kind == "studio" else plane.normal
        radiance[sel] = color * _irradiance(params, plane, index, normal, uv, points, lighting, casters) + emission
        if kind == "outdoor":  # aerial haze towards the horizon
            haze = (1 - np.exp(-t[sel] * params.metres_per_unit / 60.0))[:, None]
            radiance[sel] = radiance[sel] * (1 - haze) + haze * SKY_GAIN * 0.8 * lighting.sky.mean()
    return radiance


def _plane_albedo(params, index: int, uv_m, footprint, decor, lighting):
    """(linear albedo, emitted radiance) of the floor (index 0) or a wall at coordinates in metres."""
    if index == 0:
        return floor_albedo(params.backdrop, uv_m, footprint), 0.0
    color = wall_albedo(params.backdrop, uv_m, footprint)
    if decor is None:
        return color, 0.0
    rgba, emit = sample_decor(decor, uv_m)
    cover = rgba[:, 3:4]
    color = color * (1 - cover) + srgb_to_linear(np.clip(rgba[:, :3] / np.maximum(cover, 1e-6), 0, 1)) * cover
    return color, 2.5 * emit[:, None] * (lighting.sky[None, :] + 0.3)


def _irradiance(params, plane, index: int, normal, uv, points, lighting: Lighting, casters) -> np.ndarray:
    """Light arriving at points of a backdrop plane: sky (less near the object's feet) and each
    light (shadowed by the casters, dimmer away from the object when the light is a lamp's pool)."""
    occlusion = np.ones(len(points))
    if index == 0 and casters:
        occlusion = contact_occlusion(plane, casters, params.metres_per_unit).sample(uv)
    irradiance = lighting.ambient(np.broadcast_to(normal, (len(points), 3))) * occlusion[:, None]
    foot = np.array([0.0, params.floor_y, 0.0])
    for number, (light_dir, light_color) in enumerate(lighting.lights):
        lit = np.full(len(points), max(float(light_dir @ normal), 0.0))
        if lighting.toon:
            lit = np.floor(lit * 3 + 0.5) / 3
        if casters:
            shadow = shadow_map(plane, light_dir, params.light_softness, casters,
                                params.background_seed + 11 * number + index)
            if shadow is not None:
                lit = lit * shadow.sample(uv)
        lit = lit * (0.7 + 0.3 * occlusion)
        if params.pool > 0:
            distance_m = np.linalg.norm(points - foot, axis=1) * params.metres_per_unit
            lit = lit * (1 - params.pool * _smoothstep(0.8, 4.0, distance_m))
        irradiance = irradiance + lit[:, None] * light_color[None, :]
    return irradiance
