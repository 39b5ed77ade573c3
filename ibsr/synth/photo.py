"""Synthetic query photos: a shape photographed in a room, a studio or on a plain backdrop.

The point is a domain gap like the real one (real photos vs grey renderings), so photos are
made to look photographic: per-part materials (wood, fabric, leather, metal, glossy/matte
plastic, paint), a key light with soft shadows plus sky/ground ambient light and a cheap
environment reflection, the object standing on a textured floor (planks, tiles, carpet...)
in front of a wall in perspective, with its cast and contact shadows; occluders in front,
handheld framing (focal lengths from wide phone to tele, roll, loose and truncated crops),
exposure and white-balance errors, vignetting, blur, sensor noise, JPEG. Modules:
`photo_materials` (materials, shading), `photo_scene` (floor, walls, backdrops, occluders),
`photo_camera` (lens and sensor), `photo_lighting` (lights, shadow maps, backdrop radiance),
`photo_render` (ray casting, shading, compositing).

Three styles: `default` (what training sees), `heldout` (outdoor hard sun and sky, or a dark
stage with coloured lights and toon shading; training never sees it, so it measures how far a
model generalizes to a photo style it was not trained on) and `home` (`photo_home`: furniture
around the object, books on shelves, the object filling and cut by the frame, warmer light).
A new style draws its extra choices only in its own branch, so that the photos of the other
styles stay byte-identical for a seed.

`render_query_photo(shape, rng)` = `render_photo(shape, sample_photo_params(shape, rng))`: the
params hold every random choice, so a photo is a pure function of them and can be re-rendered
exactly, or with parts switched off (tests do that to check the mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import normalize_mesh
from ibsr.geometry.render import orbit_position, pinhole_rays

from .photo_camera import kelvin_rgb
from .photo_home import SHELF_CATEGORIES, sample_neighbours, shelf_books
from .photo_materials import (Material, random_color, sample_material, sample_part_materials,
                              srgb_to_linear)
from .photo_render import background_only, render
from .photo_scene import (FLAT_BACKGROUNDS, LARGE_OCCLUDERS, OCCLUDER_SOLIDS, SMALL_OCCLUDERS,
                          WOOD_FLOOR_COLORS, Backdrop)
from .shapes import CATEGORIES, SynthShape, make_shape

STYLES = ("default", "heldout", "home")
BRICK_COLORS = ((0.55, 0.27, 0.20), (0.65, 0.36, 0.26), (0.45, 0.25, 0.20), (0.70, 0.50, 0.38),
                (0.88, 0.86, 0.82), (0.50, 0.46, 0.42))  # sRGB: red, brown, painted white, grey
BACKGROUNDS = ("room", "studio", *FLAT_BACKGROUNDS, "outdoor", "stage")


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
class PhotoParams:
    """Every random choice of one photo. Colours of lights are linear RGB; lengths are in the
    normalized shape's units (unit bounding sphere) unless named otherwise; pixel sizes are
    given for a 256 px photo and scale with the photo size."""

    camera: PhotoCamera
    materials: tuple[Material, ...]        # one per entry of part_material
    part_material: tuple[int, ...]         # material index of each of the shape's parts
    light_dir: tuple[float, float, float]  # key light, towards the light, world frame
    light_color: tuple[float, float, float]
    ambient: tuple[float, float, float]    # sky light (ambient from above)
    shadows: bool = True                   # the object's shadows (cast, contact, self) and floor reflection
    background: str = "solid"              # one of BACKGROUNDS
    background_seed: int = 0
    occluder: dict | None = None           # a 3D solid (photo_scene.occluder_mesh) or a 2D blob
    blur_sigma: float = 0.0                # lens / handshake blur, px (0 = none)
    noise_sigma: float = 0.0               # sensor noise, 0..255 units
    noise_seed: int = 0
    jpeg_quality: int = 90                 # used when the photo is written
    extra: dict = field(default_factory=dict)
    style: str = "default"                 # one of STYLES (what sampled these params)
    backdrop: Backdrop | None = None       # floor/walls of room, studio, outdoor, stage
    floor_y: float = -1.0                  # the floor the object stands on
    metres_per_unit: float = 1.0           # texture scale: one normalized unit in metres
    light_softness: float = 0.05           # key light angular radius, radians (penumbra)
    fill_lights: tuple = ()                # extra (direction, colour) lights
    ground_bounce: tuple[float, float, float] = (0.05, 0.05, 0.05)  # ambient from below
    pool: float = 0.0                      # key light falloff away from the object (a lamp)
    motion: tuple[float, float] = (1.0, 0.0)  # blur elongation and angle (deg): handshake
    defocus_sigma: float = 0.0             # background blur (depth of field), px
    exposure: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignette: float = 0.0
    saturation: float = 1.0
    posterize: int = 0                     # colour levels and toon shading (0 = off)
    outline: bool = False                  # ink outlines on the object (toon look)
    antialias: bool = True                 # edge pixels average 4 sub-pixel rays (the mask does not)
    neighbours: tuple = ()                 # furniture beside and behind (`photo_home.sample_neighbours`)
    contents: dict | None = None           # books on the shelves (`photo_home.shelf_books`)


# ---------------------------------------------------------------- the shape in the scene

def shape_frame(mesh) -> tuple[float, float, float]:
    """(floor height, top height, metres per unit) of a mesh after `normalize_mesh`.

    The floor is y = 0 of the shape's coordinates (catalog meshes stand on it); a mesh that
    reaches below 0 stands on its lowest point, and one hovering a hair above 0 (a rounded
    foot) is put down on it. Mirrors `normalize_mesh`'s centring and scaling."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    floor = min(0.0, lo[1])
    if 0 < lo[1] < 0.03 * (hi[1] - lo[1]):
        floor = lo[1]
    metres = radius if 0.02 <= radius <= 100.0 else 1.0  # catalog meshes are in metres (mug to airliner)
    return (floor - centre[1]) / radius, (hi[1] - centre[1]) / radius, metres


# ---------------------------------------------------------------- sampling

def _direction(elevation: float, azimuth: float) -> tuple[float, float, float]:
    return (math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth))


def _scaled(color, k) -> tuple[float, float, float]:
    return tuple(float(k * c) for c in color)


def sample_camera(rng, truncate: bool, style: str = "default") -> PhotoCamera:
    """A handheld pose off the index rig.

    default: azimuth mostly front and three-quarter views, elevation 5-45 deg, focal lengths
    from a wide phone lens (72 deg) to tele (15 deg), the bounding sphere filling 45-95% of the
    frame (loose and tight crops), roll of a hand-held phone; truncated photos push the
    object partly out of the frame. heldout: wider lenses, more top-down views."""
    if style in ("default", "home"):
        band = rng.random()
        fov = float(rng.uniform(55, 72) if band < 0.45 else rng.uniform(33, 55) if band < 0.8 else rng.uniform(15, 33))
        elevation = float(5 + 40 * rng.beta(2.0, 2.6))
        azimuth = float(rng.normal(0, 45) % 360 if rng.random() < 0.7 else rng.uniform(0, 360))
    else:
        fov = float(rng.uniform(40, 85))
        elevation = float(rng.uniform(2, 65))
        azimuth = float(rng.uniform(0, 360))
    # home: the object fills the frame, often more than fills it (real photos cut it)
    fill = float(rng.uniform(0.6, 1.15) if style == "home" else rng.uniform(0.45, 0.95))
    half = math.tan(math.radians(fov) / 2)
    distance = 1.0 / math.sin(math.atan(fill * half))  # sphere's image radius = fill
    if truncate:
        angle = rng.uniform(0, 2 * math.pi)
        amount = 1.0 - fill + float(rng.uniform(0.15, 0.45)) * fill
        shift = (amount * math.cos(angle), amount * math.sin(angle))
    else:
        slack = max(0.0, 1.0 - fill) * 0.8
        shift = tuple(float(s) for s in rng.uniform(-slack, slack, size=2))
    roll = rng.normal(0, 2.5) if rng.random() < 0.85 else rng.normal(0, 8)
    return PhotoCamera(azimuth_deg=azimuth % 360, elevation_deg=elevation, distance=distance, fov_deg=fov,
                       roll_deg=float(roll), shift=(float(shift[0]), float(shift[1])))


def interior_color(rng, kind: str) -> tuple[float, float, float]:
    """Colours rooms and shops are done in: mostly whites, greys and beiges, some muted
    colours, a few bold ones (sRGB)."""
    draw = rng.random()
    if kind == "wall":
        if draw < 0.55:
            return random_color(rng, saturation=(0.0, 0.1), value=(0.78, 0.97))
        if draw < 0.85:
            return random_color(rng, saturation=(0.1, 0.35), value=(0.55, 0.9))
        return random_color(rng, saturation=(0.2, 0.6), value=(0.3, 0.75))
    if kind == "carpet":
        return random_color(rng, saturation=(0.0, 0.35), value=(0.2, 0.75))
    # tiles, concrete
    if draw < 0.7:
        return random_color(rng, saturation=(0.0, 0.12), value=(0.3, 0.95))
    return random_color(rng, saturation=(0.1, 0.4), value=(0.3, 0.85))


def _sample_room(rng, camera: PhotoCamera, studio: bool) -> Backdrop:
    """Floor, walls and decor of a room or a shop (or a seamless studio sweep)."""
    seed = int(rng.integers(2**31))
    if studio:
        paper = random_color(rng, saturation=(0.0, 0.2), value=(0.55, 0.97))
        gloss = float(rng.uniform(0.1, 0.3)) if rng.random() < 0.3 else 0.0  # an acrylic sheet under it
        return Backdrop(floor="paper", floor_colors=(paper, paper), wall="paper",
                        wall_colors=(paper, paper), walls=((camera.azimuth_deg, float(rng.uniform(2.0, 4.0))),),
                        seed=seed, gloss=gloss)
    floor = str(rng.choice(["planks", "tiles", "checker", "carpet", "concrete"], p=[0.4, 0.2, 0.05, 0.2, 0.15]))
    if floor == "planks":
        wood = WOOD_FLOOR_COLORS[int(rng.integers(len(WOOD_FLOOR_COLORS)))]
        colors = (wood, tuple(float(np.clip(c * rng.uniform(0.7, 0.95), 0, 1)) for c in wood))
        scale = rng.uniform(0.1, 0.25)
    elif floor == "carpet":
        c = interior_color(rng, "carpet")
        colors, scale = (c, _scaled(c, 0.85)), 1.0
    else:
        tile = interior_color(rng, "tiles")
        if floor == "checker":  # light and dark squares
            tile, grout = random_color(rng, (0.0, 0.15), (0.75, 0.95)), random_color(rng, (0.0, 0.4), (0.08, 0.4))
        else:
            grout = _scaled(tile, rng.uniform(0.5, 1.1))
        colors, scale = (tile, tuple(min(c, 1.0) for c in grout)), rng.uniform(0.2, 0.6)
    wall = str(rng.choice(["paint", "stripes", "brick", "panel"], p=[0.65, 0.1, 0.1, 0.15]))
    paint, second = interior_color(rng, "wall"), interior_color(rng, "wall")
    if wall == "brick":
        paint, second = BRICK_COLORS[int(rng.integers(len(BRICK_COLORS)))], (0.75, 0.73, 0.70)
    toward = camera.azimuth_deg + rng.uniform(-30, 30)
    walls = ((toward, float(rng.uniform(1.3, 3.0))),)
    if rng.random() < 0.35:  # a room corner behind the object
        offset = rng.uniform(35, 55)
        walls = ((toward + offset, walls[0][1]), (toward - offset, float(rng.uniform(1.3, 3.0))))
    decor = str(rng.choice(["none", "frames", "window", "shelves", "door"], p=[0.3, 0.25, 0.15, 0.15, 0.15]))
    polished = {"tiles": 0.5, "checker": 0.5, "concrete": 0.4, "planks": 0.35}.get(floor, 0.0)
    gloss = float(rng.uniform(0.08, 0.35)) if rng.random() < polished else 0.0
    return Backdrop(floor=floor, floor_colors=colors, floor_scale=float(scale), floor_angle=float(rng.uniform(0, 180)),
                    wall=wall, wall_colors=(paint, second), walls=walls,
                    skirting=float(rng.choice([0.0, rng.uniform(0.06, 0.15)])), decor=decor, seed=seed, gloss=gloss)


def _sample_outdoor(rng) -> Backdrop:
    ground = str(rng.choice(["grass", "gravel", "paving", "asphalt"]))
    colors = {"grass": ((0.32, 0.45, 0.18), (0.50, 0.52, 0.25)),
              "gravel": ((0.62, 0.58, 0.52), (0.45, 0.43, 0.40)),
              "paving": ((0.62, 0.60, 0.58), (0.40, 0.38, 0.36)),
              "asphalt": ((0.25, 0.25, 0.26), (0.33, 0.33, 0.33))}[ground]
    return Backdrop(floor=ground, floor_colors=colors, floor_scale=float(rng.uniform(0.3, 0.6)),
                    floor_angle=float(rng.uniform(0, 180)), seed=int(rng.integers(2**31)))


def _sample_stage(rng, camera: PhotoCamera) -> Backdrop:
    dark = random_color(rng, saturation=(0.0, 0.5), value=(0.12, 0.35))
    return Backdrop(floor=str(rng.choice(["planks", "paper"])), floor_colors=(dark, _scaled(dark, 0.7)),
                    floor_scale=float(rng.uniform(0.1, 0.2)), wall="paint",
                    wall_colors=(_scaled(dark, 1.3), dark), walls=((camera.azimuth_deg, float(rng.uniform(2, 4))),),
                    seed=int(rng.integers(2**31)), gloss=float(rng.uniform(0.1, 0.4)) if rng.random() < 0.5 else 0.0)


def _sample_occluder(rng, camera: PhotoCamera, background: str, top_y: float, floor_y: float,
                     metres: float) -> dict:
    """A solid standing on the floor between the camera and the object (box, bin, ball, or
    another catalog object at its real size: furniture in front of furniture, a mug in front
    of a kettle), partly in the line of sight; a flat blob when there is no floor or no room
    in front of the object."""
    horizontal = camera.distance * math.cos(math.radians(camera.elevation_deg))
    room = (horizontal - 1.6) / 2.5  # the largest radius that fits between object and camera
    kind = str(rng.choice(OCCLUDER_SOLIDS, p=[0.25, 0.25, 0.1, 0.4]))
    seed = int(rng.integers(2**31))
    radius = float(rng.uniform(0.12, 0.4))
    height = float((top_y - floor_y) * rng.uniform(0.3, 0.9))
    depth = float(radius * rng.uniform(0.6, 1.4))
    category = None
    if kind == "object":
        choices = [c for c in (LARGE_OCCLUDERS if metres > 0.3 else SMALL_OCCLUDERS) if c in CATEGORIES]
        category = choices[int(rng.integers(len(choices)))]
        extents = make_shape(category, np.random.default_rng(seed)).mesh.extents / metres
        radius, height, depth = float(extents[0] / 2), float(extents[1]), float(extents[2] / 2)
        if max(radius, depth) > room:
            kind, radius, depth = "box", min(radius, room), min(depth, room)
    if background in FLAT_BACKGROUNDS or max(radius, depth) > room or room < 0.06 or rng.random() < 0.1:
        return dict(center=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
                    radius=float(rng.uniform(0.12, 0.3)), corners=int(rng.integers(5, 10)),
                    color=random_color(rng), seed=seed)
    # somewhere on the floor between the object's bounding sphere and the camera
    reach = max(radius, depth)
    along = 1.0 + reach + rng.uniform(0.1, 0.6) * (horizontal - 1.5 - 2 * reach)
    visible_half_width = (horizontal - along) / horizontal  # the object's half-width seen at that depth
    side = rng.choice([-1.0, 1.0]) * (reach + rng.uniform(0.0, 0.9) * visible_half_width)
    az = math.radians(camera.azimuth_deg)
    x = along * math.sin(az) + side * math.cos(az)
    z = along * math.cos(az) - side * math.sin(az)
    occluder = dict(kind=kind, position=(float(x), float(z)), size=(radius, height, depth),
                    yaw=float(rng.uniform(0, 360)), seed=seed, material=sample_material(rng))
    if kind == "object":
        occluder["category"] = category
    return occluder


def _sample_lighting(rng, background: str, camera: PhotoCamera, correction=(0.6, 1.0)) -> dict:
    """Key light, sky and ground light, colour temperatures, the camera's white balance."""
    if background == "outdoor":  # hard sun, blue sky
        sun = kelvin_rgb(rng.uniform(4500, 6000))
        sky = kelvin_rgb(rng.uniform(9000, 12000))
        return dict(light_dir=_direction(rng.uniform(0.35, 1.1), rng.uniform(0, 2 * math.pi)),
                    light_color=_scaled(sun, rng.uniform(3.5, 4.5)), ambient=_scaled(sky, rng.uniform(0.7, 1.0)),
                    ground_bounce=_scaled((0.5, 0.55, 0.4), rng.uniform(0.25, 0.4)),
                    light_softness=float(rng.uniform(0.005, 0.02)), fill_lights=(), pool=0.0,
                    white_balance=tuple(float(g) for g in np.exp(rng.normal(0, 0.03, 3))))
    if background == "stage":  # two or three strongly coloured lights, little ambient
        lights = []
        facing = math.radians(camera.azimuth_deg)
        for _ in range(int(rng.integers(2, 4))):  # from the camera's side, left or right
            color = srgb_to_linear(random_color(rng, saturation=(0.7, 1.0), value=(0.9, 1.0)))
            direction = _direction(rng.uniform(0.2, 1.0), facing + rng.uniform(-1.0, 1.0))
            lights.append((direction, _scaled(color, rng.uniform(1.5, 3.0))))
        (key_dir, key_color), fills = lights[0], tuple(lights[1:])
        return dict(light_dir=key_dir, light_color=key_color, ambient=_scaled((0.5, 0.5, 0.6), rng.uniform(0.15, 0.3)),
                    ground_bounce=(0.02, 0.02, 0.02), light_softness=float(rng.uniform(0.02, 0.1)),
                    fill_lights=fills, pool=float(rng.uniform(0.5, 0.8)), white_balance=(1.0, 1.0, 1.0))
    # indoors: a lamp, window or softbox as key, the room as sky light; the camera corrects
    # most (not all) of the light's colour
    kelvin = float(rng.uniform(2700, 6500))
    light = np.asarray(kelvin_rgb(kelvin))
    sky = np.asarray(kelvin_rgb(float(np.clip(kelvin + rng.normal(800, 1200), 2500, 10000))))
    correction = rng.uniform(*correction)
    mean_light = (light * 2.5 + sky) / 3.5
    white_balance = mean_light ** -correction * np.exp(rng.normal(0, 0.03, 3))
    return dict(light_dir=_direction(rng.uniform(0.45, 1.3), rng.uniform(0, 2 * math.pi)),
                light_color=_scaled(light, rng.uniform(1.6, 3.0)), ambient=_scaled(sky, rng.uniform(0.35, 0.8)),
                ground_bounce=_scaled(sky, rng.uniform(0.1, 0.25)), light_softness=float(rng.uniform(0.03, 0.35)),
                fill_lights=(), pool=float(rng.uniform(0.0, 0.5)) if background == "room" else 0.0,
                white_balance=tuple(float(g / white_balance[1]) for g in white_balance))


def _sample_response(rng, style: str, background: str, camera: PhotoCamera) -> dict:
    """Exposure error, vignetting, blur, depth of field, noise, JPEG; posterize/outlines for stage."""
    blur_draw = rng.random()
    blur = 0.0 if blur_draw < 0.35 else rng.uniform(0.3, 0.8) if blur_draw < 0.85 else rng.uniform(0.8, 2.0)
    motion = (float(rng.uniform(2, 5)), float(rng.uniform(0, 180))) if rng.random() < 0.15 else (1.0, 0.0)
    deep_scene = background in ("room", "outdoor", "stage")  # something far behind to blur
    defocus_odds = 0.6 if camera.fov_deg < 40 else 0.25  # tele lenses blur the background more often
    defocus = float(rng.uniform(0.5, 3.0)) if deep_scene and rng.random() < defocus_odds else 0.0
    stage = background == "stage"
    return dict(exposure=float(2 ** rng.normal(0, 0.35)), vignette=float(rng.uniform(0.0, 0.35)),
                saturation=float(rng.uniform(0.85, 1.4 if style == "heldout" else 1.2)),
                blur_sigma=float(blur), motion=motion, defocus_sigma=defocus,
                noise_sigma=float(rng.uniform(0.0, 1.5) if stage else rng.uniform(0.5, 5.0)),
                noise_seed=int(rng.integers(2**31)),
                jpeg_quality=int(rng.integers(55, 96)),
                posterize=int(rng.integers(6, 11)) if stage else 0, outline=bool(stage and rng.random() < 0.6))


def sample_photo_params(shape: SynthShape, rng, occlusion_prob: float = 0.3, truncation_prob: float | None = None,
                        style: str = "default") -> PhotoParams:
    """Draw every random choice of one photo of `shape` (see the module docstring). A photo is
    truncated (the object pushed partly out of the frame) with `truncation_prob`: 0.15, and 0.4
    in the home style."""
    if style not in STYLES:
        raise IbsrError(f"unknown photo style {style!r}: choose from {', '.join(STYLES)}")
    if truncation_prob is None:
        truncation_prob = 0.4 if style == "home" else 0.15
    floor_y, top_y, metres = shape_frame(shape.mesh)
    materials, part_material = sample_part_materials(shape.part_names, rng)
    camera = sample_camera(rng, truncate=rng.random() < truncation_prob, style=style)
    if style == "default":
        background = str(rng.choice(["room", "studio", "solid", "gradient", "noise", "clutter"],
                                    p=[0.6, 0.25, 0.03, 0.03, 0.03, 0.06]))
        backdrop = None
        if background in ("room", "studio"):
            backdrop = _sample_room(rng, camera, studio=background == "studio")
    elif style == "home":  # homes and shops (a shop's studio-like corner now and then)
        background = "room" if rng.random() < 0.85 else "studio"
        backdrop = _sample_room(rng, camera, studio=background == "studio")
    else:
        background = "outdoor" if rng.random() < 0.6 else "stage"
        backdrop = _sample_outdoor(rng) if background == "outdoor" else _sample_stage(rng, camera)
    # indoor photos at home keep more of a lamp's warmth than the default style's
    lighting = _sample_lighting(rng, background, camera, correction=(0.3, 1.0) if style == "home" else (0.6, 1.0))
    response = _sample_response(rng, style, background, camera)
    # a camera's auto-exposure: scaled to the light level (lit white lands near the top of
    # the tone curve), then off by a random error
    level = 0.5 * max(np.mean(c) for _, c in ((None, lighting["light_color"]), *lighting["fill_lights"]))
    response["exposure"] *= (1.6 if background == "stage" else 1.1) / (level + float(np.mean(lighting["ambient"])))
    occluder = None
    if rng.random() < occlusion_prob:
        occluder = _sample_occluder(rng, camera, background, top_y, floor_y, metres)
    home = {}
    if style == "home":
        home = _sample_home(shape, rng, camera, backdrop, floor_y, metres)
    return PhotoParams(camera=camera, materials=materials, part_material=part_material,
                       shadows=bool(rng.random() < 0.9), background=background,
                       background_seed=int(rng.integers(2**31)), occluder=occluder, style=style,
                       backdrop=backdrop, floor_y=floor_y, metres_per_unit=metres,
                       **lighting, **response, **home)


def _sample_home(shape: SynthShape, rng, camera: PhotoCamera, backdrop: Backdrop, floor_y: float,
                 metres: float) -> dict:
    """The home style's furniture around the object (in rooms, mostly) and books on its shelves."""
    home = {}
    if backdrop.walls and rng.random() < 0.85 and backdrop.floor != "paper":
        home["neighbours"] = sample_neighbours(rng, camera, backdrop, floor_y, metres, make_shape, CATEGORIES)
    if shape.category in SHELF_CATEGORIES and rng.random() < 0.85:
        home["contents"] = shelf_books(normalize_mesh(shape.mesh), rng, metres)
    return home


# ---------------------------------------------------------------- rendering

def render_photo(shape: SynthShape, params: PhotoParams, size: int = 256):
    """Render one query photo: (rgb uint8 HxWx3, mask bool HxW).

    The mask is exactly the pixels whose ray hits the shape before anything else (not the
    floor, not a shadow, not an occluder)."""
    return render(shape, params, size)


def photo_background(params: PhotoParams, size: int) -> np.ndarray:
    """The photo without the object and its shadows, as the camera records it: float HxWx3
    in 0..1. Equals the photo outside the mask when occluder, blur, shadows and anti-aliasing
    are off."""
    return background_only(params, size)


def render_query_photo(shape: SynthShape, rng, size: int = 256, style: str = "default"):
    """Random query photo of `shape`: (rgb uint8 HxWx3, mask bool HxW)."""
    rgb, mask, _ = sample_query_photo(shape, rng, size, style=style)
    return rgb, mask


def sample_query_photo(shape: SynthShape, rng, size: int = 256, min_visible: float = 0.02,
                       tries: int = 5, style: str = "default"):
    """Like `render_query_photo`, also returning the `PhotoParams` drawn (JPEG quality etc.).

    Redraws (up to `tries` times, from the same rng, so still deterministic) when less than
    `min_visible` of the frame shows the object (a thin lamp, truncated and occluded).
    """
    for _ in range(tries):
        params = sample_photo_params(shape, rng, style=style)
        rgb, mask = render_photo(shape, params, size)
        if mask.mean() >= min_visible:
            break
    return rgb, mask, params
