"""Ray casting one synthetic query photo from its `PhotoParams` (see `photo.py`).

Order: primary rays against the object and the occluder (Embree via trimesh, only the rays
that can reach each one's bounding sphere) and against the floor/wall planes (numpy); the
backdrop is lit with shadow maps (soft: jittered shadow rays on a grid in each plane, blurred)
and a contact-occlusion map under the object; the object and occluder are shaded with smooth
normals, self-shadows (one jittered shadow ray per pixel, smoothed in the image) and
near-floor occlusion; then lens blur, sensor and tone curve (`photo_camera`).
"""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import trimesh

from ibsr.geometry.mesh import normalize_mesh
from ibsr.geometry.render import first_hits, look_at_basis, ray_intersector

from .photo_camera import draw_outlines, lens_blur, sensor
from .photo_home import books_mesh
from .photo_lighting import HARD_LIGHT, jittered_directions, make_lighting, plate_radiance, rays_blocked
from .photo_materials import Material, albedo, shade, srgb_to_linear
from .photo_scene import blob_mask, floor_plane, lookup, occluder_mesh, wall_plane


class Surface:
    """A mesh ready for ray casting and smooth shading."""

    def __init__(self, mesh: trimesh.Trimesh):
        self.mesh = mesh
        self.intersector = ray_intersector(mesh)
        lo, hi = mesh.bounds
        self.center = (lo + hi) / 2
        self.radius = float(np.linalg.norm(mesh.vertices - self.center, axis=1).max()) * 1.001 + 1e-9
        self.corners = _corner_normals(mesh)

    def trace(self, origins: np.ndarray, directions: np.ndarray):
        """(distance, triangle, point) of each ray's first hit (inf, -1, nan on a miss); only
        rays passing the bounding sphere go to Embree. `origins`: one point or one per ray."""
        n = len(directions)
        origins = np.broadcast_to(np.asarray(origins, float), (n, 3))
        t, tri, points = np.full(n, np.inf), np.full(n, -1, np.int64), np.full((n, 3), np.nan)
        rel = self.center - origins
        along = np.einsum("ij,ij->i", directions, rel)
        near = np.einsum("ij,ij->i", rel, rel) - along ** 2 <= self.radius ** 2
        candidates = np.flatnonzero(near & (along > -self.radius))
        if len(candidates):
            found, where = first_hits(self.mesh, origins[candidates].copy(), directions[candidates], with_points=True,
                                      intersector=self.intersector)
            tri[candidates], points[candidates] = found, where
            hit = tri >= 0
            t[hit] = np.linalg.norm(points[hit] - origins[hit], axis=1)
        return t, tri, points

    def blocks(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        tri, _ = first_hits(self.mesh, origins, directions, intersector=self.intersector)
        return tri >= 0

    def normals(self, tri: np.ndarray, points: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
        """Smooth shading normals at hit points, turned towards the viewer (so meshes with
        flipped or inconsistent winding shade like clean ones)."""
        faces = np.asarray(self.mesh.face_normals)[tri]
        bary = trimesh.triangles.points_to_barycentric(self.mesh.triangles[tri], points)
        smooth = np.einsum("nk,nkj->nj", np.nan_to_num(bary), self.corners[tri])
        length = np.linalg.norm(smooth, axis=1, keepdims=True)
        smooth = smooth / np.maximum(length, 1e-12)
        bad = (length[:, 0] < 1e-6) | (np.einsum("ij,ij->i", smooth, faces) < 0.3)
        smooth[bad] = faces[bad]
        away = np.einsum("ij,ij->i", faces, view_dirs) > 0
        smooth[away] *= -1
        return smooth


_CORNER_CACHE: dict = {}  # mesh digest -> corner normals: photos of one shape share them


def _corner_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F, 3, 3) normals at each face corner: averaged over neighbours across edges sharper
    than 40 degrees only (trimesh's smooth_shade), so boxes stay crisp and cylinders round."""
    key = hashlib.sha1(np.ascontiguousarray(mesh.vertices).tobytes()
                       + np.ascontiguousarray(mesh.faces).tobytes()).digest()
    if key in _CORNER_CACHE:
        return _CORNER_CACHE[key]
    corners = np.repeat(np.asarray(mesh.face_normals)[:, None, :], 3, axis=1)
    try:
        smooth = trimesh.graph.smooth_shade(mesh, angle=math.radians(40), facet_minarea=None)
        components = smooth.metadata.get("original_components")
    except Exception:  # a mesh trimesh cannot analyse: flat shading
        components = None
    if components:
        corners[np.concatenate(components)] = np.asarray(smooth.vertex_normals)[smooth.faces]
    if len(_CORNER_CACHE) >= 16:
        _CORNER_CACHE.pop(next(iter(_CORNER_CACHE)))
    _CORNER_CACHE[key] = corners
    return corners


# ---------------------------------------------------------------- the object

def _part_axes(mesh, face_parts, parts: int) -> list[np.ndarray]:
    """Each part's longest bounding-box axis: the grain of wood, the brushing of metal."""
    axes = []
    for part in range(parts):
        faces = mesh.faces[face_parts == part]
        if len(faces) == 0:
            axes.append(np.array([0.0, 1.0, 0.0]))
            continue
        extent = np.ptp(mesh.vertices[faces.reshape(-1)], axis=0)
        axes.append(np.eye(3)[int(np.argmax(extent))])
    return axes


def _self_shadow(points, normals, light_dir, softness, casters, seed, pixels, size) -> np.ndarray:
    """Light visibility at object pixels: two jittered shadow rays each, smoothed over the
    neighbouring object pixels (a soft penumbra for the cost of two rays)."""
    if not casters:
        return np.ones(len(points))
    rng = np.random.default_rng(seed)
    visible = np.zeros(len(points))
    strata = 1 if softness < HARD_LIGHT else 2
    for stratum in range(strata):
        directions = jittered_directions(light_dir, softness, len(points), rng, sector=(stratum, strata))
        facing = np.einsum("ij,ij->i", normals, directions) > 0
        start = points[facing] + normals[facing] * 2e-3
        visible[facing] += ~rays_blocked(casters, start, directions[facing]) / strata
    if pixels is None:  # sub-pixel rays: averaged per pixel later, nothing to smooth over
        return visible
    image, weight = np.zeros(size * size, np.float32), np.zeros(size * size, np.float32)
    image[pixels], weight[pixels] = visible, 1.0
    sigma = max(1.4 * size / 256, 0.5)
    total = cv2.GaussianBlur(weight, (0, 0), sigma).ravel()
    smooth = cv2.GaussianBlur(image, (0, 0), sigma).ravel() / np.maximum(total, 1e-6)
    return np.clip(smooth[pixels], 0, 1)


def shade_surface(surface, groups, parts, pixels, tri, points, directions, t, params, lighting, casters, size):
    """Radiance of the rays that see `surface`. `groups[k]`: (material, grain axis) of part k;
    `parts`: the part each ray sees."""
    normals = surface.normals(tri, points, directions)
    footprint = t * 2 * math.tan(math.radians(params.camera.fov_deg) / 2) / size
    shadows = [_self_shadow(points, normals, d, params.light_softness, casters,
                            params.noise_seed + 7 * i, pixels, size) for i, (d, _) in enumerate(lighting.lights)]
    height = (points[:, 1] - params.floor_y) * params.metres_per_unit
    ao = 1 - 0.45 * np.exp(-height / 0.03) if casters else np.ones(len(points))
    color = np.zeros((len(points), 3))
    for part, (material, axis) in enumerate(groups):
        sel = parts == part
        if not sel.any():
            continue
        base = albedo(material, points[sel], axis=axis, footprint=footprint[sel])
        color[sel] = shade(material, base, normals[sel], directions[sel], lighting,
                           [s[sel] for s in shadows], ao[sel])
    return color


def shared_plane_faces(mesh, face_parts) -> np.ndarray:
    """Faces lying in a plane that faces of another part lie in too: where two parts may be
    coplanar and overlap (an arm flush with a sofa's base), which Embree then settles pixel
    by pixel, so the parts' materials flicker."""
    normals = np.asarray(mesh.face_normals)
    sign = np.where(np.abs(normals[:, 0]) > 1e-6, np.sign(normals[:, 0]),
                    np.where(np.abs(normals[:, 1]) > 1e-6, np.sign(normals[:, 1]), np.sign(normals[:, 2])))
    normals = normals * sign[:, None]  # n and -n: one plane
    offsets = np.einsum("ij,ij->i", normals, mesh.vertices[mesh.faces[:, 0]])
    keys = np.round(np.column_stack([normals, offsets]) * 1e4).astype(np.int64)
    _, plane = np.unique(keys, axis=0, return_inverse=True)
    plane = plane.ravel()
    plane_parts = np.unique(np.column_stack([plane, face_parts]), axis=0)
    return np.bincount(plane_parts[:, 0], minlength=plane.max() + 1)[plane] > 1


def resolve_coplanar_parts(mesh, face_parts, shared, tri, eye, directions) -> np.ndarray:
    """The part each ray sees, with z-fighting settled: rays that hit a face in a plane shared
    with another part (`shared_plane_faces`) are re-traced against each part alone; the
    nearest part wins, the lowest part index on a tie."""
    parts = face_parts[tri]
    rows = np.flatnonzero(shared[tri])
    if len(rows) == 0:
        return parts
    origins = np.broadcast_to(eye, (len(rows), 3)).copy()
    best_t = np.full(len(rows), np.inf)
    best = parts[rows].copy()
    for part in np.unique(face_parts):
        sub = trimesh.Trimesh(mesh.vertices, mesh.faces[face_parts == part], process=False)
        found, where = first_hits(sub, origins, directions[rows], with_points=True)
        t = np.where(found >= 0, np.linalg.norm(np.nan_to_num(where) - eye, axis=1), np.inf)
        nearer = t < best_t * (1 - 1e-6)  # parts come in index order: a tie keeps the lower one
        best[nearer], best_t[nearer] = part, t[nearer]
    parts = parts.copy()
    parts[rows] = best
    return parts


# ---------------------------------------------------------------- the photo

# sub-pixel offsets of the anti-aliasing rays (a rotated grid, as GPUs use for 4x MSAA)
SUBPIXELS = ((-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125))


class Scene:
    """The object (with its shelves' books), the occluder and the furniture around it, and the
    lights of one photo, ready to trace and shade rays."""

    def __init__(self, shape, params):
        self.params = params
        mesh = normalize_mesh(shape.mesh)
        up = np.array([0.0, 1.0, 0.0])
        self.face_parts = np.asarray(shape.face_parts)
        axes = _part_axes(mesh, self.face_parts, len(shape.part_names))
        self.target_groups = [(params.materials[params.part_material[part]], axis) for part, axis in enumerate(axes)]
        if params.contents:  # books on the shelves belong to the object (and to its mask)
            books, colour = books_mesh(params.contents)
            self.face_parts = np.concatenate([self.face_parts, len(self.target_groups) + colour])
            self.target_groups += [(m, up) for m in params.contents["materials"]]
            mesh = trimesh.util.concatenate([mesh, books])
        self.target = Surface(mesh)
        solids = [params.occluder] if params.occluder is not None and "kind" in params.occluder else []
        solids += list(params.neighbours)
        self.blocker = None
        if solids:  # the occluder and the furniture around: not the object, one surface to trace
            meshes = [occluder_mesh(solid, params.floor_y) for solid in solids]
            self.blocker = Surface(meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes))
            self.blocker_parts = np.repeat(np.arange(len(meshes)), [len(m.faces) for m in meshes])
            self.blocker_groups = [(solid.get("material") or Material(), up) for solid in solids]
        self.lighting = make_lighting(params)
        self.casters = [s for s in (self.target, self.blocker) if s is not None] if params.shadows else []
        self.shared_faces = shared_plane_faces(mesh, self.face_parts)

    def trace(self, origins, directions) -> dict:
        """Which rays see the object, which the occluder (from one eye or one origin per ray)."""
        t_obj, tri_obj, p_obj = self.target.trace(origins, directions)
        if self.blocker is not None:
            t_occ, tri_occ, p_occ = self.blocker.trace(origins, directions)
        else:
            t_occ, tri_occ, p_occ = np.full(len(directions), np.inf), None, None
        seen_obj = (tri_obj >= 0) & (t_obj < t_occ)
        return dict(obj=(seen_obj, tri_obj, p_obj, t_obj), occ=(np.isfinite(t_occ) & ~seen_obj, tri_occ, p_occ, t_occ))

    def shade(self, hits: dict, eye, directions, radiance, size: int, image_pixels: bool) -> None:
        """Write the radiance of the rays that see the object or the occluder into `radiance`.
        `image_pixels`: the rays are the image's pixels from `eye` (self-shadows get smoothed
        over them, z-fighting between parts is settled)."""
        for key, surface in (("obj", self.target), ("occ", self.blocker)):
            seen, tri, points, t = hits[key]
            if surface is None or not seen.any():
                continue
            rows = np.flatnonzero(seen)
            if key == "occ":
                groups, parts = self.blocker_groups, self.blocker_parts[tri[rows]]
            elif image_pixels:
                groups = self.target_groups
                parts = resolve_coplanar_parts(surface.mesh, self.face_parts, self.shared_faces, tri[rows], eye,
                                               directions[rows])
            else:
                groups, parts = self.target_groups, self.face_parts[tri[rows]]
            radiance[rows] = shade_surface(surface, groups, parts, rows if image_pixels else None, tri[rows],
                                           points[rows], directions[rows], t[rows], self.params, self.lighting,
                                           self.casters, size)


def subpixel_rays(camera, pixels: np.ndarray, size: int) -> np.ndarray:
    """Directions of the `SUBPIXELS` rays of each pixel (pixel-major), as `pinhole_rays` aims."""
    right, up, forward = look_at_basis(camera.eye, (0.0, 0.0, 0.0), roll_deg=camera.roll_deg)
    half = math.tan(math.radians(camera.fov_deg) / 2)
    row, col = np.divmod(pixels, size)
    offsets = np.asarray(SUBPIXELS)
    cx = (col[:, None] + 0.5 + offsets[None, :, 0]) / size * 2 - 1
    cy = (row[:, None] + 0.5 + offsets[None, :, 1]) / size * 2 - 1
    x = ((cx + camera.shift[0]) * half).reshape(-1, 1)
    y = ((-cy + camera.shift[1]) * half).reshape(-1, 1)
    directions = forward + x * right + y * up
    return directions / np.linalg.norm(directions, axis=1, keepdims=True), row, col


def edge_pixels(hits: dict, size: int) -> np.ndarray:
    """Pixels on a silhouette (object / occluder / backdrop boundary) or a depth step."""
    seen_obj, _, _, t_obj = hits["obj"]
    ids = (seen_obj.astype(np.uint8) + 2 * hits["occ"][0].astype(np.uint8)).reshape(size, size)
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.dilate(ids, kernel) != cv2.erode(ids, kernel)
    depth = np.where(seen_obj, t_obj, 0).astype(np.float32).reshape(size, size)
    step = cv2.morphologyEx(depth, cv2.MORPH_GRADIENT, kernel)
    edges |= seen_obj.reshape(size, size) & (step > 0.03 * depth)
    return np.flatnonzero(edges)


def render(shape, params, size: int):
    scene = Scene(shape, params)
    origins, directions = params.camera.rays(size)
    eye = origins[0]
    hits = scene.trace(eye, directions)
    plate = plate_radiance(params, eye, directions, size, scene.lighting, scene.casters)
    if params.shadows and params.backdrop is not None and params.backdrop.gloss > 0:
        plate = _floor_reflection(scene, plate, eye, directions, hits, size)
    plate = plate.reshape(size, size, 3)
    plate = lens_blur(plate, params.defocus_sigma * size / 256)
    radiance = plate.reshape(-1, 3).copy()
    scene.shade(hits, eye, directions, radiance, size, image_pixels=True)

    # anti-aliasing: edge pixels become the mean of 4 sub-pixel rays (the mask stays the
    # pixel-centre rays); a sub-ray that misses takes the backdrop from the plate image
    edges = edge_pixels(hits, size) if params.antialias else []
    if len(edges):
        sub_dirs, row, col = subpixel_rays(params.camera, edges, size)
        offsets = np.asarray(SUBPIXELS)
        sub = lookup(plate.astype(np.float32), (col[:, None] + offsets[None, :, 0]).ravel(),
                     (row[:, None] + offsets[None, :, 1]).ravel()).astype(np.float64)
        scene.shade(scene.trace(eye, sub_dirs), eye, sub_dirs, sub, size, image_pixels=False)
        radiance[edges] = sub.reshape(len(edges), len(SUBPIXELS), 3).mean(axis=1)

    image = radiance.reshape(size, size, 3)
    mask = hits["obj"][0].reshape(size, size)
    if params.occluder is not None and scene.blocker is None:
        mask &= ~_draw_blob(image, params.occluder, mask, scene.lighting)
    image = lens_blur(image, params.blur_sigma * size / 256, *params.motion)
    rgb = sensor(image, params)
    if params.outline:
        depth = np.where(hits["obj"][0], hits["obj"][3], 0).reshape(size, size)
        rgb = draw_outlines(rgb, mask, depth, size)
    return rgb, mask


def _draw_blob(image, occluder: dict, mask, lighting) -> np.ndarray:
    """Paint a flat blob held close to the lens (out of focus: soft edge, shaded across) over
    the image; returns the pixels it covers (its sharp polygon: alpha >= 1/2)."""
    size = image.shape[0]
    cover = blob_mask(occluder, mask)
    rng = np.random.default_rng(occluder["seed"] + 1)
    alpha = cv2.GaussianBlur(cover.astype(np.float32), (0, 0), rng.uniform(0.5, 2.5) * size / 256)
    shading = 0.55 + 0.45 * cv2.resize(rng.uniform(size=(3, 3)).astype(np.float32), (size, size),
                                       interpolation=cv2.INTER_CUBIC)
    color = srgb_to_linear(occluder["color"]) * (lighting.sky + 0.6 * lighting.lights[0][1])
    blob = color[None, None, :] * np.clip(shading, 0.3, 1.2)[..., None]
    image[:] = image * (1 - alpha[..., None]) + blob * alpha[..., None]
    return cover


def _floor_reflection(scene, plate, eye, directions, hits, size: int) -> np.ndarray:
    """A polished floor mirrors the object (and occluder), blurred by the floor's roughness and
    weighted by a Fresnel-like term (stronger at grazing angles)."""
    params = scene.params
    floor = floor_plane(params.floor_y)
    t_floor = floor.intersect(eye, directions)
    backdrop_t = [wall_plane(az, d, params.floor_y).intersect(eye, directions) for az, d in params.backdrop.walls]
    on_floor = np.isfinite(t_floor) & ~hits["obj"][0] & ~hits["occ"][0]
    for t_wall in backdrop_t:
        on_floor &= t_floor <= t_wall
    rows = np.flatnonzero(on_floor)
    if len(rows) == 0:
        return plate
    d = directions[rows]
    mirrored = d * np.array([1.0, -1.0, 1.0])
    origins = eye + t_floor[rows, None] * d + np.array([0.0, 1e-4, 0.0])
    reflected = scene.trace(origins, mirrored)
    seen = reflected["obj"][0] | reflected["occ"][0]
    if not seen.any():
        return plate
    layer = np.zeros((len(rows), 3))
    scene.shade(reflected, None, mirrored, layer, size, image_pixels=False)
    image, weight = np.zeros((size * size, 3), np.float32), np.zeros(size * size, np.float32)
    image[rows], weight[rows] = layer, seen
    sigma = max(1.2 * size / 256, 0.5)
    image = cv2.GaussianBlur(image.reshape(size, size, 3), (0, 0), sigma).reshape(-1, 3)
    weight = cv2.GaussianBlur(weight.reshape(size, size), (0, 0), sigma).ravel()
    grazing = 1 - np.abs(d[:, 1])
    strength = params.backdrop.gloss * (0.35 + 0.65 * grazing ** 3) * weight[rows]
    out = plate.copy()
    color = image[rows] / np.maximum(weight[rows], 1e-6)[:, None]
    out[rows] = plate[rows] * (1 - strength[:, None]) + color * strength[:, None]
    return out


def background_only(params, size: int) -> np.ndarray:
    origins, directions = params.camera.rays(size)
    plate = plate_radiance(params, origins[0], directions, size, make_lighting(params), []).reshape(size, size, 3)
    return sensor(lens_blur(plate, params.defocus_sigma * size / 256), params).astype(np.float64) / 255.0
