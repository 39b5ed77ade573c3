"""Multi-view grayscale rendering of catalog shapes (the CMIC shape representation).

A shape is represented by V (=12) grayscale, Lambertian-shaded views taken from a fixed ring of
cameras (`CameraRig`). The renderer is a ray caster: one primary ray per pixel, the rays of
all views built at once (cached per rig and size) and sent to trimesh's Embree intersector in
a few large queries, flat shading from the hit triangle's normal. No texture, no color, no
shadows: the paper's grayscale rendering beat a textured pipeline, and a ray caster needs no
GPU or display.

Conventions:
- The mesh is normalized first (`mesh.normalize_mesh`): bounding box centred at the origin, farthest
  vertex at distance 1 (unit bounding sphere), +y up, the object's front facing +z.
- Pixels where no ray hits the object have the value `BACKGROUND` (255, white); object pixels
  are at most `OBJECT_MAX` (235), so background and object never share a value.
- Image row 0 is the top of the picture (+y side); column 0 is the left.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import trimesh

from ibsr.errors import IbsrError

BACKGROUND = 255  # white, like the paper's (and ShapeNet's) renderings
OBJECT_MAX = 235  # brightest object pixel: keeps object and background distinguishable

# Lighting of the index renderings. Two-sided (|n . l|) so that meshes with flipped or
# inconsistent normals shade the same as clean ones, which catalogs often have.
AMBIENT = 0.22
HEADLIGHT = 0.48  # light at the camera: every visible surface gets some light
KEY_LIGHT = 0.30  # fixed in the world, from above-front-left: tops read brighter than sides
KEY_LIGHT_DIR = np.array([-0.35, 0.85, 0.40]) / np.linalg.norm([-0.35, 0.85, 0.40])

# Rays per Embree query. All views go through one loop of a few large queries; chunks of 32k
# keep trimesh's float64 temporaries in cache, faster than one query of every ray
# (benchmarks/RESULTS.md, "Rendering the views").
RAY_CHUNK = 32768


@dataclass(frozen=True)
class CameraRig:
    """A ring of perspective pinhole cameras looking at the origin.

    View k sits at azimuth `azimuth_offset_deg + k * 360 / views` (0 = in front of the object,
    on +z; increasing towards +x), `elevation_deg` above the horizontal plane, `distance` from
    the origin, with a square image of `fov_deg` full field of view and +y up in the picture.

    The defaults make the unit bounding sphere project to a centred disk whose radius is
    tan(asin(1/distance)) / tan(fov/2) = 0.94 of the half-frame, so any normalized object fits
    without clipping from every view, whatever its orientation (a roundish object fills ~90% of
    the frame, a thin one less along its short side: the price of that guarantee). 12 views at
    30 degrees of elevation are the paper's (and MVCNN's) ring; perspective rather than
    orthographic because query photos are perspective.
    """

    views: int = 12
    elevation_deg: float = 30.0
    azimuth_offset_deg: float = 0.0
    distance: float = 2.5
    fov_deg: float = 50.0

    def __post_init__(self):
        if self.views < 1:
            raise IbsrError(f"camera rig needs at least one view, got {self.views}")
        if self.distance <= 1.0:
            raise IbsrError(f"camera distance {self.distance} is inside the unit bounding sphere")
        if not 0.0 < self.fov_deg < 180.0:
            raise IbsrError(f"field of view must be in (0, 180) degrees, got {self.fov_deg}")

    @property
    def sphere_fill(self) -> float:
        """Radius of the unit sphere's image as a fraction of the half-frame (<1: no clipping)."""
        return math.tan(math.asin(1.0 / self.distance)) / math.tan(math.radians(self.fov_deg) / 2)

    def azimuths_deg(self) -> np.ndarray:
        return self.azimuth_offset_deg + np.arange(self.views) * (360.0 / self.views)

    def eyes(self) -> np.ndarray:
        """(V, 3) camera positions."""
        return np.stack([orbit_position(az, self.elevation_deg, self.distance)
                         for az in self.azimuths_deg()])

    def to_dict(self) -> dict:
        return {"projection": "perspective", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "CameraRig":
        fields = {k: v for k, v in data.items() if k != "projection"}
        return cls(**fields)


DEFAULT_RIG = CameraRig()


def orbit_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Point on a sphere around the origin: azimuth 0 on +z, 90 on +x; elevation up to +y."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(el) * math.sin(az), math.sin(el),
                                math.cos(el) * math.cos(az)])


def look_at_basis(eye, target, up=(0.0, 1.0, 0.0), roll_deg: float = 0.0):
    """(right, up, forward) unit vectors of a camera at `eye` looking at `target`."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: any right vector will do
        right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    if roll_deg:
        c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
        right, true_up = c * right + s * true_up, -s * right + c * true_up
    return right, true_up, forward


def pinhole_rays(eye, target, fov_deg: float, size: int, up=(0.0, 1.0, 0.0),
                 roll_deg: float = 0.0, shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Rays through the centres of a size x size image's pixels, row-major, row 0 at the top.

    `shift` moves the principal point, in units of the half-frame (x right, y up): the camera
    still points at `target` but the picture is off-centre (used to truncate query photos).
    Returns (origins, directions), each (size*size, 3), directions unit length.
    """
    right, true_up, forward = look_at_basis(eye, target, up, roll_deg)
    half = math.tan(math.radians(fov_deg) / 2)
    centers = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # -1..1 across the image
    x = (centers[None, :] + shift[0]) * half               # columns: left to right
    y = (-centers[:, None] + shift[1]) * half              # rows: top to bottom
    x, y = np.broadcast_arrays(x, y)
    directions = forward + x.reshape(-1, 1) * right + y.reshape(-1, 1) * true_up
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.broadcast_to(np.asarray(eye, float), directions.shape).copy()
    return origins, directions


@functools.lru_cache(maxsize=4)
def rig_rays(rig: CameraRig, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays of every view of the rig, view-major: (V*size*size, 3) origins and directions.

    Cached (read-only arrays): building them costs as much as the Embree query itself at 224
    px, and an index build renders every shape with the same rig and size.
    """
    per_view = [pinhole_rays(eye, (0.0, 0.0, 0.0), rig.fov_deg, size) for eye in rig.eyes()]
    origins = np.concatenate([o for o, _ in per_view])
    directions = np.concatenate([d for _, d in per_view])
    origins.flags.writeable = directions.flags.writeable = False
    return origins, directions


def ray_intersector(mesh: trimesh.Trimesh):
    """Embree intersector when embreex is installed (far faster), else trimesh's numpy one."""
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
        return RayMeshIntersector(mesh)
    except (ImportError, ValueError):
        return mesh.ray


def first_hits(mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray,
               with_points: bool = False, intersector=None):
    """Nearest hit of every ray (all views at once, in chunks of `RAY_CHUNK` rays).

    Returns the triangle index per ray (-1 = miss) and, if `with_points`, the (N, 3) hit
    points (NaN on misses; otherwise None). Points cost extra (trimesh computes them in numpy
    after the Embree query), so the index renderer does without them. Without points and
    without a given `intersector` the rays go to Embree straight (`_embree_first_triangles`:
    the same triangles as trimesh's intersector, tested), else through trimesh's.
    """
    tri = np.full(len(origins), -1, dtype=np.int64)
    points = np.full((len(origins), 3), np.nan) if with_points else None
    if len(mesh.faces) == 0 or len(origins) == 0:
        return tri, points
    if not with_points and intersector is None:
        straight = _embree_first_triangles(mesh, origins, directions)
        if straight is not None:
            return straight, None
    intersector = intersector if intersector is not None else ray_intersector(mesh)
    for start in range(0, len(origins), RAY_CHUNK):
        stop = start + RAY_CHUNK
        found = intersector.intersects_id(origins[start:stop], directions[start:stop],
                                          multiple_hits=False, return_locations=with_points)
        tri[start + found[1]] = found[0]
        if with_points:
            points[start + found[1]] = found[2]
    return tri, points


def _embree_first_triangles(mesh: trimesh.Trimesh, origins: np.ndarray, directions: np.ndarray) -> np.ndarray | None:
    """`first_hits`' triangles straight from Embree (`embreex`), or None when it is not installed.

    The same query as trimesh's Embree intersector makes, with its precision scaling (vertices
    and origins moved to the mesh's lower corner and scaled to a box of ~100, float32), without
    its wrapper: float64 copies and a re-normalization of every direction took more time than
    Embree's own traversal (the index renderer 1.8x faster per shape; benchmarks/RESULTS.md,
    "Rendering the views"). Directions must be unit length (`rig_rays`' are)."""
    try:
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh
    except ImportError:
        return None
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    corner, scale = vertices.min(axis=0), 100.0 / mesh.scale
    scene = rtcore_scene.EmbreeScene()
    TriangleMesh(scene=scene, vertices=((vertices - corner) * scale).astype(np.float32),
                 indices=np.asarray(mesh.faces).astype(np.int32))
    tri = np.empty(len(origins), dtype=np.int64)
    for start in range(0, len(origins), RAY_CHUNK):
        stop = start + RAY_CHUNK
        tri[start:stop] = scene.run(((origins[start:stop] - corner) * scale).astype(np.float32),
                                    directions[start:stop].astype(np.float32))
    return tri


def render_views(mesh: trimesh.Trimesh, size: int, rig: CameraRig = DEFAULT_RIG) -> np.ndarray:
    """Render a normalized mesh from every rig view: (V, size, size) uint8 grayscale.

    Deterministic: the same mesh, size and rig give the same bytes.
    """
    if size < 1:
        raise IbsrError(f"render size must be positive, got {size}")
    origins, directions = rig_rays(rig, size)
    tri, _ = first_hits(mesh, origins, directions)
    image = np.full(len(origins), BACKGROUND, dtype=np.uint8)
    hit = tri >= 0
    if hit.any():
        normals = np.asarray(mesh.face_normals)[tri[hit]]
        image[hit] = shade_gray(normals, directions[hit])
    return image.reshape(rig.views, size, size)


def shade_gray(normals: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
    """Two-sided Lambertian shading of hit points -> uint8 in [0, OBJECT_MAX]."""
    headlight = np.abs(np.einsum("ij,ij->i", normals, view_dirs))
    key = np.abs(normals @ KEY_LIGHT_DIR)
    intensity = np.clip(AMBIENT + HEADLIGHT * headlight + KEY_LIGHT * key, 0.0, 1.0)
    return np.round(intensity * OBJECT_MAX).astype(np.uint8)


def montage(views: np.ndarray, cols: int = 4, tile: int = 64) -> np.ndarray:
    """Grid of the views (row-major, `cols` per row), each resized to tile x tile: a thumbnail.

    Empty cells are background. Returns (rows*tile, cols*tile) uint8.
    """
    import cv2  # imported here: only thumbnails need OpenCV

    views = np.asarray(views)
    if views.ndim != 3:
        raise IbsrError(f"montage expects (V, H, W) views, got shape {views.shape}")
    rows = -(-len(views) // cols)
    sheet = np.full((rows * tile, cols * tile), BACKGROUND, dtype=np.uint8)
    for k, view in enumerate(views):
        # INTER_AREA averages source pixels: no aliasing when shrinking 224 -> 64
        small = cv2.resize(np.ascontiguousarray(view, dtype=np.uint8), (tile, tile),
                           interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = small
    return sheet
