"""The `home` photo style: an object photographed where people live with it.

Real photos of furniture (`../shared/real_dev`) differ from the `default` style in ways a
retrieval model learns from: other furniture stands beside and behind the object, bookcases
hold books, the object fills the frame and is often cut by it, upholstered furniture has a
frame and cushions of different materials, and indoor light is left warmer than a camera
would correct it. This module draws those choices; `photo.sample_photo_params` puts them into
`PhotoParams` (`neighbours`, `contents`) and `photo_render` renders them:

- neighbours: other furniture at its real size standing on the floor beside or behind the
  object (never in front: that is the occluder's job), inside the room's walls; they are not
  part of the object's mask.
- contents: books on the shelves of a bookcase, found by casting rays down through the mesh;
  they *are* part of the object (the mask of a full bookcase includes its books, as a user's
  mask would).
- parts: a one-part mesh (a user's catalog mesh, a real CAD model) split into its connected
  components (`shapes.mesh_parts`), chunky ones named "cushion" and thin ones "frame", so each
  gets its own material.

Everything is a function of its arguments (an rng passed in): no global random state.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import trimesh

from .photo_materials import random_color, sample_material
from .photo_scene import LARGE_OCCLUDERS

SHELF_CATEGORIES = ("bookcase", "shelf")  # meshes whose shelves get books (the procedural bookshelf has its own)
BOOK_COLOURS = 6          # materials books are drawn from (each a material group to shade)


def shelf_books(mesh: trimesh.Trimesh, rng, metres_per_unit: float, fill: float = 0.8) -> dict | None:
    """Books on the shelves of `mesh` (normalized: unit bounding sphere, +y up): {"boxes":
    [(centre, size), ...], "colour": [material index per box], "materials": [...]}, or None
    when no shelf is found.

    A shelf is an upward-facing surface with more of the mesh above it (0.12 to 0.6 of the
    height: not the top); each shelf is filled with probability `fill`, left to right, with
    books 1.5-6 cm thick standing to 60-95% of the shelf's clear height, in runs of one
    colour, with an odd gap."""
    shelves = _find_shelves(mesh)
    if not shelves:
        return None
    painted = [sample_material(rng, "painted") for _ in range(BOOK_COLOURS)]  # then their colours, bolder
    materials = [replace(m, color=random_color(rng, saturation=(0.2, 0.8), value=(0.15, 0.85))) for m in painted]
    boxes, colours = [], []
    for (y, clearance, (a0, a1), (d0, d1), axis) in shelves:
        if rng.random() > fill:
            continue
        position, colour = a0, int(rng.integers(BOOK_COLOURS))
        while True:
            thick = float(rng.uniform(0.015, 0.06)) / metres_per_unit
            if position + thick > a1:
                break
            if rng.random() < 0.05:  # a gap, or the end of the row
                position += float(rng.uniform(0.05, 0.25)) / metres_per_unit
                continue
            if rng.random() < 0.3:
                colour = int(rng.integers(BOOK_COLOURS))
            height = min(clearance * float(rng.uniform(0.6, 0.95)), 0.4 / metres_per_unit)
            depth = (d1 - d0) * float(rng.uniform(0.55, 0.9))
            centre = (position + thick / 2, y + height / 2, d1 - depth / 2)  # flush with the shelf's front
            size = (thick, height, depth)
            if axis == 2:  # the shelf runs along z: swap the width and depth axes
                centre, size = centre[::-1], size[::-1]
            boxes.append((centre, size))
            colours.append(colour)
            position += thick
    if not boxes:
        return None
    return {"boxes": tuple(boxes), "colour": tuple(colours), "materials": tuple(materials)}


def books_mesh(contents: dict) -> tuple[trimesh.Trimesh, np.ndarray]:
    """The books as one mesh, and each face's material index into contents["materials"]."""
    meshes = [trimesh.creation.box(extents=size, transform=trimesh.transformations.translation_matrix(centre))
              for centre, size in contents["boxes"]]
    colours = np.repeat(np.asarray(contents["colour"], np.int64), [len(m.faces) for m in meshes])
    return trimesh.util.concatenate(meshes), colours


def _find_shelves(mesh: trimesh.Trimesh, columns: int = 24, rows: int = 6) -> list:
    """(y, clear height, (start, end) along the width, (back, front) along the depth, width axis)
    of each shelf: vertical rays on a grid over the footprint; an upward-facing hit with another
    hit above it within 0.12-0.6 of the height is a shelf point; points are grouped by height."""
    lo, hi = mesh.bounds
    height = hi[1] - lo[1]
    axis = 0 if hi[0] - lo[0] >= hi[2] - lo[2] else 2  # shelves run along the longer side
    depth_axis = 2 - axis
    a = np.linspace(lo[axis], hi[axis], columns + 2)[1:-1]
    d = np.linspace(lo[depth_axis], hi[depth_axis], rows + 2)[1:-1]
    grid = np.stack(np.meshgrid(a, d, indexing="ij"), -1).reshape(-1, 2)
    origins = np.zeros((len(grid), 3))
    origins[:, axis], origins[:, depth_axis], origins[:, 1] = grid[:, 0], grid[:, 1], hi[1] + 0.01
    directions = np.tile([0.0, -1.0, 0.0], (len(grid), 1))
    points, ray_index, tri = mesh.ray.intersects_location(origins, directions, multiple_hits=True)
    if len(points) == 0:
        return []
    upward = np.abs(mesh.face_normals[tri][:, 1]) > 0.9
    found = []
    for ray in np.unique(ray_index):
        mine = np.flatnonzero(ray_index == ray)
        ys = points[mine, 1]
        order = np.argsort(ys)
        for i, j in zip(order[:-1], order[1:]):
            clear = ys[j] - ys[i]
            if upward[mine[i]] and 0.12 * height <= clear <= 0.6 * height:
                found.append((ys[i], clear, grid[ray, 0], grid[ray, 1]))
    if not found:
        return []
    found = np.asarray(found)
    shelves = []
    levels = np.round(found[:, 0] / (0.02 * height))
    for level in np.unique(levels):
        at = found[levels == level]
        if len(at) < 3:
            continue
        step_a = (a[1] - a[0]) / 2 if len(a) > 1 else 0.0
        step_d = (d[1] - d[0]) / 2 if len(d) > 1 else 0.0
        shelves.append((float(at[:, 0].max()) + 1e-3, float(at[:, 1].min()),
                        (float(at[:, 2].min() - step_a), float(at[:, 2].max() + step_a)),
                        (float(at[:, 3].min() - step_d), float(at[:, 3].max() + step_d)), axis))
    return shelves


def sample_neighbours(rng, camera, backdrop, floor_y: float, metres: float, make_shape, categories) -> tuple:
    """1-3 pieces of furniture at their real size on the floor beside or behind the object (at
    least 60 degrees off the line to the camera), each clear of the object's bounding sphere and
    inside the room's walls; those that do not fit are left out. Each is an `occluder_mesh`
    dict of kind "object"."""
    choices = [c for c in LARGE_OCCLUDERS if c in categories]
    if not choices or metres <= 0.3:  # a mug has no furniture standing around it at its scale
        return ()
    neighbours = []
    for _ in range(int(rng.integers(1, 4))):
        category = choices[int(rng.integers(len(choices)))]
        seed = int(rng.integers(2**31))
        extents = make_shape(category, np.random.default_rng(seed)).mesh.extents / metres
        half_width, height, half_depth = float(extents[0] / 2), float(extents[1]), float(extents[2] / 2)
        reach = math.hypot(half_width, half_depth)
        off = math.radians(float(rng.uniform(60, 180)) * rng.choice([-1.0, 1.0]))
        bearing = math.radians(camera.azimuth_deg) + off
        distance = 1.0 + reach + float(rng.uniform(0.0, 0.8))
        x, z = distance * math.sin(bearing), distance * math.cos(bearing)
        if not _inside_walls(backdrop, x, z, reach):
            continue
        neighbours.append(dict(kind="object", category=category, position=(x, z),
                               size=(half_width, height, half_depth), yaw=float(rng.uniform(0, 360)),
                               seed=seed, material=sample_material(rng)))
    return tuple(neighbours)


def _inside_walls(backdrop, x: float, z: float, reach: float) -> bool:
    """Whether a footprint of radius `reach` at (x, z) is on the room's side of every wall (a
    wall is `distance` from the origin against its normal, `photo_scene.wall_plane`)."""
    for azimuth, distance in backdrop.walls:
        a = math.radians(azimuth)
        if -(x * math.sin(a) + z * math.cos(a)) + reach > distance:
            return False
    return True
