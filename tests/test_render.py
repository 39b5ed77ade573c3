"""Index renderer: camera rig, determinism, framing, thumbnails."""

import sys

import numpy as np
import pytest
import trimesh

from ibsr.errors import IbsrError
from ibsr.geometry.render import (BACKGROUND, DEFAULT_RIG, OBJECT_MAX, CameraRig, first_hits, montage, pinhole_rays,
                                  ray_intersector, render_views, rig_rays)


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=3, radius=1.0)


def test_default_rig_is_the_papers_ring_of_twelve():
    assert DEFAULT_RIG.views == 12 and DEFAULT_RIG.elevation_deg == 30
    assert len(DEFAULT_RIG.eyes()) == 12
    assert np.allclose(np.linalg.norm(DEFAULT_RIG.eyes(), axis=1), DEFAULT_RIG.distance)
    assert DEFAULT_RIG.sphere_fill < 1.0
    assert CameraRig.from_dict(DEFAULT_RIG.to_dict()) == DEFAULT_RIG
    assert DEFAULT_RIG.to_dict()["projection"] == "perspective"


def test_bad_rig_is_a_user_error():
    with pytest.raises(IbsrError):
        CameraRig(distance=0.9)


def test_output_shape_dtype_and_determinism(sphere):
    first = render_views(sphere, 32)
    assert first.shape == (12, 32, 32) and first.dtype == np.uint8
    assert np.array_equal(first, render_views(sphere, 32))
    small = render_views(sphere, 16, CameraRig(views=3))
    assert small.shape == (3, 16, 16)


def test_background_where_rays_miss(sphere):
    views = render_views(sphere, 32)
    origins, directions = rig_rays(DEFAULT_RIG, 32)
    tri, _ = first_hits(sphere, origins, directions)
    miss = (tri < 0).reshape(views.shape)
    assert miss.any() and (~miss).any()
    assert (views[miss] == BACKGROUND).all()
    assert (views[~miss] <= OBJECT_MAX).all()


def test_unit_sphere_fills_but_does_not_clip_the_frame(sphere):
    views = render_views(sphere, 64)
    fg = views != BACKGROUND
    border = np.concatenate([fg[:, 0, :], fg[:, -1, :], fg[:, :, 0], fg[:, :, -1]], axis=1)
    assert not border.any()
    for view in fg:
        rows, cols = np.nonzero(view)
        assert (rows.max() - rows.min() + 1) / 64 > 0.6
        assert (cols.max() - cols.min() + 1) / 64 > 0.6


def test_flipped_normals_shade_the_same(sphere):
    flipped = trimesh.Trimesh(sphere.vertices, sphere.faces[:, ::-1], process=False)
    assert np.array_equal(render_views(sphere, 24), render_views(flipped, 24))


def test_up_is_up_in_the_picture():
    # a flat plate high up (y=0.8) must appear in the upper half of every view
    plate = trimesh.creation.box([1.0, 0.05, 1.0])
    plate.apply_translation([0, 0.8, 0])
    views = render_views(plate, 32)
    rows = np.nonzero(views != BACKGROUND)[1]
    assert rows.mean() < 16


def test_pinhole_rays_center_looks_at_target():
    origins, directions = pinhole_rays([0, 0, 3], [0, 0, 0], 60, 3)
    assert np.allclose(directions[4], [0, 0, -1])
    assert directions[0][1] > 0 and directions[0][0] < 0  # row 0 top, column 0 left


def test_montage_grid():
    views = np.full((12, 32, 32), 100, np.uint8)
    sheet = montage(views, cols=4, tile=16)
    assert sheet.shape == (48, 64) and (sheet == 100).all()
    sheet = montage(views[:5], cols=4, tile=16)
    assert sheet.shape == (32, 64) and (sheet[16:, 16:] == BACKGROUND).all()


@pytest.mark.parametrize("mesh", [
    trimesh.creation.box(extents=(0.3, 1.6, 0.2)),  # thin and tall: most rays pass beside it
    trimesh.creation.icosphere(subdivisions=2, radius=0.4).apply_translation((0.5, -0.3, 0.2)),  # off centre
    trimesh.creation.box(extents=(6.0, 6.0, 6.0)),  # not normalized: it holds every camera
])
def test_embree_straight_gives_the_triangles_of_trimeshs_intersector(mesh, monkeypatch):
    size, rig = 48, CameraRig(views=5, elevation_deg=20.0)
    origins, directions = rig_rays(rig, size)
    through_trimesh, _ = first_hits(mesh, origins, directions, intersector=ray_intersector(mesh))
    assert (through_trimesh >= 0).any()
    assert np.array_equal(first_hits(mesh, origins, directions)[0], through_trimesh)
    straight = render_views(mesh, size, rig)
    monkeypatch.setitem(sys.modules, "embreex", None)  # not installed: trimesh's path, the same pixels
    assert np.array_equal(render_views(mesh, size, rig), straight)
