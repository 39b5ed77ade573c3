"""The photographic query photos: determinism, exact masks, floor and shadows, styles, any mesh."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import normalize_mesh
from ibsr.synth import catalog_shape, render_photo, render_query_photo, sample_photo_params
from ibsr.synth.photo import STYLES, sample_query_photo, shape_frame
from ibsr.synth.photo_home import books_mesh, shelf_books
from ibsr.synth.photo_scene import floor_plane, occluder_mesh
from ibsr.synth.shapes import mesh_parts, shape_from_mesh

SIZE = 64


def _first_hit_distance(mesh, camera, size):
    """Independent re-ray-cast with trimesh's own API: distance to the first hit per pixel."""
    origins, directions = camera.rays(size)
    locations, rays, _ = mesh.ray.intersects_location(origins, directions, multiple_hits=False)
    distance = np.full(len(origins), np.inf)
    distance[rays] = np.linalg.norm(locations - origins[rays], axis=1)
    return distance.reshape(size, size)


def _params_with(shape, seed, **wanted):
    """The photo params of the first seed from `seed` on whose draws match `wanted`."""
    kwargs = wanted.pop("kwargs", {})
    for s in range(seed, seed + 200):
        params = sample_photo_params(shape, np.random.default_rng(s), **kwargs)
        if all(getattr(params, k) == v for k, v in wanted.items()):
            return params
    raise AssertionError(f"no params with {wanted}")


@pytest.mark.parametrize("style", STYLES)
def test_photos_are_byte_identical_on_rerun(style):
    shape = catalog_shape("chair", 1, seed=3)
    runs = [sample_query_photo(shape, np.random.default_rng(11), SIZE, style=style) for _ in range(2)]
    (rgb_a, mask_a, params_a), (rgb_b, mask_b, params_b) = runs
    assert params_a == params_b and params_a.style == style
    assert np.array_equal(rgb_a, rgb_b) and np.array_equal(mask_a, mask_b) and mask_a.any()
    other, _, _ = sample_query_photo(shape, np.random.default_rng(12), SIZE, style=style)
    assert not np.array_equal(rgb_a, other)


def test_styles_never_share_a_backdrop():
    shape = catalog_shape("table", 0, seed=3)
    seen = {style: {sample_photo_params(shape, np.random.default_rng(s), style=style).background for s in range(40)}
            for style in STYLES}
    assert seen["heldout"] == {"outdoor", "stage"}
    assert "room" in seen["default"] and "studio" in seen["default"]
    assert not seen["default"] & seen["heldout"]
    assert seen["home"] == {"room", "studio"}
    with pytest.raises(IbsrError, match="unknown photo style"):
        sample_photo_params(shape, np.random.default_rng(0), style="cartoon")


def test_floor_is_where_the_shape_stands():
    chair = catalog_shape("chair", 0, seed=2)  # stands on y = 0
    floor, top, metres = shape_frame(chair.mesh)
    normalized = normalize_mesh(chair.mesh)
    assert floor == pytest.approx(normalized.bounds[0][1], abs=1e-9)
    assert top == pytest.approx(normalized.bounds[1][1], abs=1e-9)
    assert metres == pytest.approx(np.linalg.norm(chair.mesh.vertices - chair.mesh.bounds.mean(axis=0), axis=1).max())
    shelf = trimesh.creation.box(extents=(1.0, 0.2, 0.4))
    shelf.apply_translation([0, 1.5, 0])  # hangs 1.4 m above the floor: the floor stays at y = 0
    floor, _, _ = shape_frame(shelf)
    assert floor < normalize_mesh(shelf).bounds[0][1] - 1.0


@pytest.mark.parametrize("category", ["sofa", "lamp"])
def test_mask_is_the_visible_object_with_shadows_and_antialiasing_on(category):
    shape = catalog_shape(category, 0, seed=5)
    params = _params_with(shape, 0, background="room", shadows=True)
    params = replace(params, occluder=None)
    rgb, mask = render_photo(shape, params, SIZE)
    hits = np.isfinite(_first_hit_distance(normalize_mesh(shape.mesh), params.camera, SIZE))
    assert np.array_equal(mask, hits)


def test_a_solid_occluder_cuts_the_mask_where_it_is_nearer():
    shape = catalog_shape("cabinet", 0, seed=5)
    params = _params_with(shape, 0, background="room")
    camera = replace(params.camera, azimuth_deg=0.0, elevation_deg=15.0, distance=4.0, fov_deg=45.0, shift=(0.0, 0.0))
    box = dict(kind="box", position=(0.3, 2.0), size=(0.25, 0.8, 0.25), yaw=20.0, seed=1,
               material=params.materials[0])
    params = replace(params, camera=camera, occluder=box)
    _, mask = render_photo(shape, params, SIZE)
    to_object = _first_hit_distance(normalize_mesh(shape.mesh), camera, SIZE)
    to_box = _first_hit_distance(occluder_mesh(box, params.floor_y), camera, SIZE)
    expected = np.isfinite(to_object) & (to_object < to_box)
    assert np.array_equal(mask, expected)
    assert expected.sum() < np.isfinite(to_object).sum()  # the box really hides part of it


def test_floor_and_shadow_pixels_are_never_in_the_mask():
    shape = catalog_shape("table", 2, seed=5)
    params = _params_with(shape, 0, background="studio", shadows=True)
    quiet = replace(params, occluder=None, blur_sigma=0.0, noise_sigma=0.0, antialias=False,
                    vignette=0.0, light_softness=0.02)
    lit, mask = render_photo(shape, quiet, SIZE)
    unshadowed, mask_without = render_photo(shape, replace(quiet, shadows=False), SIZE)
    assert np.array_equal(mask, mask_without)
    origins, directions = quiet.camera.rays(SIZE)
    on_floor = np.isfinite(floor_plane(quiet.floor_y).intersect(origins[0], directions)).reshape(SIZE, SIZE)
    floor_only = on_floor & ~mask
    darker = (lit.astype(int).sum(axis=2) < unshadowed.astype(int).sum(axis=2) - 6)
    shadow = darker & floor_only
    assert floor_only.sum() > 0.2 * SIZE * SIZE and shadow.sum() > 10  # a floor with a visible shadow on it
    assert not (mask & floor_only).any() and not (mask & shadow).any()


def test_heldout_style_renders_both_of_its_looks():
    shape = catalog_shape("stool", 0, seed=5)
    for background in ("outdoor", "stage"):
        params = _params_with(shape, 0, background=background, kwargs={"style": "heldout"})
        rgb, mask = render_photo(shape, replace(params, occluder=None), SIZE)
        hits = np.isfinite(_first_hit_distance(normalize_mesh(shape.mesh), params.camera, SIZE))
        assert np.array_equal(mask, hits) and mask.any()
        assert rgb.shape == (SIZE, SIZE, 3) and rgb[~mask].std() > 1  # a backdrop, not a flat fill


def test_shape_from_mesh_photographs_a_plain_box():
    box = trimesh.creation.box(extents=(0.6, 1.0, 0.4))  # centred: its bottom is below y = 0
    shape = shape_from_mesh(box, "crate", "crate_0001")
    assert shape.part_names == ("body",) and not shape.face_parts.any()
    assert shape.shape_id == "crate/crate_0001" and shape.mesh is not box
    for style in STYLES:
        rgb, mask = render_query_photo(shape, np.random.default_rng(3), SIZE, style=style)
        assert rgb.shape == (SIZE, SIZE, 3) and mask.mean() > 0.02
    params = replace(sample_photo_params(shape, np.random.default_rng(3)), occluder=None)
    assert params.floor_y == pytest.approx(normalize_mesh(box).bounds[0][1])  # stands on its bottom
    _, mask = render_photo(shape, params, SIZE)
    assert np.array_equal(mask, np.isfinite(_first_hit_distance(normalize_mesh(box), params.camera, SIZE)))
    with pytest.raises(IbsrError, match="no faces"):
        shape_from_mesh(trimesh.Trimesh(), "crate", "empty")


def test_cli_synth_photo_style(tmp_path):
    from ibsr.cli.data import PHOTO_STYLES, main

    assert sorted(PHOTO_STYLES) == sorted(STYLES)  # the CLI's copy, kept to avoid importing the renderer

    runner = CliRunner()
    written = {}
    for style in STYLES:
        out = tmp_path / style
        result = runner.invoke(main, ["synth", "--out", str(out), "--categories", "chair", "--shapes-per-category", "1",
                                      "--queries-per-shape", "1", "--size", "32", "--photo-style", style, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["photo_style"] == style
        written[style] = (out / "queries" / "chair" / "chair_0000_0.jpg").read_bytes()
    assert len(set(written.values())) == len(STYLES)
    bad = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--photo-style", "cartoon"])
    assert bad.exit_code == 2 and "cartoon" in bad.output


def _two_part_block():
    """Part 1 is a box flush inside part 0: their lower side faces are coplanar (z-fighting)."""
    outer = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    outer.apply_translation([0, 0.5, 0])
    inner = trimesh.creation.box(extents=(1.0, 0.5, 1.0))
    inner.apply_translation([0, 0.25, 0])
    mesh = trimesh.util.concatenate([outer, inner])
    parts = np.repeat([0, 1], [len(outer.faces), len(inner.faces)])
    from ibsr.synth.shapes import SynthShape
    return SynthShape("block", "block", mesh, parts, ("outer", "inner"))


def test_coplanar_parts_do_not_flicker():
    from ibsr.synth.photo_materials import Material

    shape = _two_part_block()
    params = _params_with(shape, 0, background="studio")
    red, blue = Material("painted", (0.8, 0.1, 0.1), 0.9), Material("painted", (0.1, 0.1, 0.8), 0.9)
    camera = replace(params.camera, azimuth_deg=30.0, elevation_deg=20.0, distance=3.5, fov_deg=40.0, shift=(0.0, 0.0))
    params = replace(params, camera=camera, materials=(red, blue), part_material=(0, 1), occluder=None,
                     blur_sigma=0.0, noise_sigma=0.0, antialias=False, saturation=1.0)
    rgb, mask = render_photo(shape, params, SIZE)
    seen = rgb[mask].astype(int)
    assert mask.sum() > 300
    assert (seen[:, 0] > seen[:, 2]).all()  # the outer (red) box everywhere: ties go to the lower part


def _bookcase() -> trimesh.Trimesh:
    """An open bookcase, 0.8 x 2.0 x 0.3 m: two sides, a back, a top, a bottom and three shelves."""
    parts = [((0.02, 2.0, 0.3), (-0.39, 1.0, 0.0)), ((0.02, 2.0, 0.3), (0.39, 1.0, 0.0)),
             ((0.8, 2.0, 0.02), (0.0, 1.0, -0.14))]
    parts += [((0.76, 0.02, 0.28), (0.0, y, 0.01)) for y in (0.01, 0.5, 1.0, 1.5, 1.99)]
    return trimesh.util.concatenate([trimesh.creation.box(extents=e, transform=trimesh.transformations.translation_matrix(c))
                                     for e, c in parts])


def test_home_style_puts_books_on_the_shelves_and_in_the_mask():
    shape = shape_from_mesh(_bookcase(), "bookcase", "open")
    params = _params_with(shape, 0, kwargs={"style": "home"})
    assert params.style == "home" and params.background in ("room", "studio")
    normalized = normalize_mesh(shape.mesh)
    contents = shelf_books(normalized, np.random.default_rng(1), params.metres_per_unit, fill=1.0)
    shelves = sorted({round(c[1] - s[1] / 2, 3) for c, s in contents["boxes"]})
    tops = normalize_mesh(_bookcase()).vertices[:, 1]
    assert len(shelves) == 4  # the bottom and the three shelves; never on top
    assert all(lo >= tops.min() and lo < tops.max() - 0.1 for lo in shelves)
    camera = replace(params.camera, azimuth_deg=0.0, elevation_deg=10.0, distance=4.0, fov_deg=40.0, shift=(0.0, 0.0))
    filled = replace(params, camera=camera, occluder=None, neighbours=(), contents=contents)
    _, mask = render_photo(shape, filled, SIZE)
    books, _ = books_mesh(contents)
    both = trimesh.util.concatenate([normalized, books])
    assert np.array_equal(mask, np.isfinite(_first_hit_distance(both, camera, SIZE)))
    rgb_empty, _ = render_photo(shape, replace(filled, contents=None), SIZE)
    rgb_full, _ = render_photo(shape, filled, SIZE)
    assert np.abs(rgb_full.astype(int) - rgb_empty.astype(int)).sum(axis=2)[mask].mean() > 5  # books show


def test_home_style_furniture_around_is_not_in_the_mask():
    shape = catalog_shape("chair", 0, seed=5)
    for seed in range(200):
        params = sample_photo_params(shape, np.random.default_rng(seed), style="home")
        if params.neighbours and params.occluder is None:
            around = trimesh.util.concatenate([occluder_mesh(n, params.floor_y) for n in params.neighbours])
            to_around = _first_hit_distance(around, params.camera, SIZE)
            if np.isfinite(to_around).mean() > 0.02:  # furniture visible in the frame
                break
    else:
        raise AssertionError("no home photo with furniture in view")
    _, mask = render_photo(shape, params, SIZE)
    to_object = _first_hit_distance(normalize_mesh(shape.mesh), params.camera, SIZE)
    assert np.array_equal(mask, np.isfinite(to_object) & (to_object < to_around))
    for n in params.neighbours:  # beside or behind, clear of the object's bounding sphere
        x, z = n["position"]
        assert math.hypot(x, z) > 1.0 + max(n["size"][0], n["size"][2])


def test_split_parts_gives_cushions_and_frames_their_own_parts():
    frame = trimesh.creation.box(extents=(0.05, 0.9, 0.05))  # a thin leg...
    legs = [frame.copy() for _ in range(4)]
    for leg, (x, z) in zip(legs, [(-0.3, -0.3), (0.3, -0.3), (-0.3, 0.3), (0.3, 0.3)]):
        leg.apply_translation([x, 0.45, z])
    seat = trimesh.creation.box(extents=(0.7, 0.06, 0.7), transform=trimesh.transformations.translation_matrix([0, 0.9, 0]))
    cushion = trimesh.creation.box(extents=(0.6, 0.15, 0.6), transform=trimesh.transformations.translation_matrix([0, 1.0, 0]))
    crumb = trimesh.creation.box(extents=(0.01, 0.01, 0.01))
    mesh = trimesh.util.concatenate([seat, cushion, *legs, crumb])
    face_parts, names = mesh_parts(mesh)
    assert names[0] == "body" and sorted(names[1:]) == ["cushion", "frame", "frame", "frame", "frame"][:len(names) - 1]
    assert face_parts[-len(crumb.faces):].tolist() == [0] * len(crumb.faces)  # a crumb joins the body
    split = shape_from_mesh(mesh, "chair", "x", split_parts=True)
    assert split.part_names == names and np.array_equal(split.face_parts, face_parts)
    assert shape_from_mesh(mesh, "chair", "x").part_names == ("body",)
