import numpy as np
import pytest
import trimesh

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import MeshError, load_mesh, normalize_mesh


def write_box(path, extents=(1.0, 2.0, 0.5), offset=(0, 0, 0), scale=1.0):
    box = trimesh.creation.box(extents=extents)
    box.apply_translation(offset)
    box.apply_scale(scale)
    box.export(path)
    return path


@pytest.mark.parametrize("ext", ["obj", "off", "ply", "stl", "glb"])
def test_formats_load_normalized(tmp_path, ext):
    mesh = load_mesh(write_box(tmp_path / f"box.{ext}", offset=(5, -3, 2)))
    radius = np.linalg.norm(mesh.vertices, axis=1).max()
    assert radius == pytest.approx(1.0, abs=1e-6)
    assert np.abs(mesh.bounds.mean(axis=0)).max() < 1e-6  # bounding box centred


def test_huge_coordinates_are_normalized(tmp_path):
    mesh = load_mesh(write_box(tmp_path / "big.obj", offset=(1e9, 1e9, -1e9), scale=1e6))
    assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(1.0, abs=1e-5)


def test_z_up_becomes_y_up(tmp_path):
    path = write_box(tmp_path / "tall_z.obj", extents=(0.2, 0.2, 3.0))
    extents = np.ptp(load_mesh(path, up_axis="z").vertices, axis=0)
    assert extents.argmax() == 1


def test_multi_part_scene_is_merged(tmp_path):
    scene = trimesh.Scene([trimesh.creation.box(), trimesh.creation.icosphere().apply_translation((3, 0, 0))])
    scene.export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert len(mesh.faces) == 12 + 1280  # a box and a subdivided icosphere


def test_nan_vertices_are_dropped(tmp_path):
    path = tmp_path / "nan.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 0 0\nv 0 0 1\nf 1 2 3\nf 1 4 5\nf 1 2 5\n")
    mesh = load_mesh(path)
    assert len(mesh.faces) == 2 and np.isfinite(mesh.vertices).all()


@pytest.mark.parametrize("content, reason", [
    ("", "empty file"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
    ("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
    ("solid x\n facet garbage\n", "cannot load|no faces"),
])
def test_broken_meshes_name_the_file(tmp_path, content, reason):
    path = tmp_path / ("bad.stl" if content.startswith("solid") else "bad.obj")
    path.write_text(content)
    with pytest.raises(MeshError, match=reason) as info:
        load_mesh(path)
    assert str(path) in str(info.value)


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.glb"
    path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(MeshError, match=str(path)):
        load_mesh(path)


def test_normalize_mesh_unit_sphere_centred():
    box = trimesh.creation.box([2.0, 4.0, 1.0])
    box.apply_translation([10, -3, 5])
    out = normalize_mesh(box)
    assert np.isclose(np.linalg.norm(out.vertices, axis=1).max(), 1.0)
    assert np.allclose(out.bounds.sum(axis=0), 0.0, atol=1e-12)
    assert np.allclose(box.vertices[0], [10 - 1, -3 - 2, 5 - 0.5])  # input untouched


@pytest.mark.parametrize("axis,tall", [("z", 2), ("-z", 2), ("x", 0), ("-x", 0), ("y", 1), ("-y", 1)])
def test_normalize_mesh_moves_the_up_axis_to_y(axis, tall):
    extents = [0.2, 0.2, 0.2]
    extents[tall] = 1.0
    box = trimesh.creation.box(extents)
    box.apply_translation(np.eye(3)[tall] * (1.0 if not axis.startswith("-") else -1.0))
    out = normalize_mesh(box, up_axis=axis)
    assert np.argmax(out.extents) == 1  # the tall side is now vertical


def test_normalize_mesh_z_up_keeps_handedness():
    # z-up convention: x right, -y front, z up. A marker at right-front-top must land at
    # right (+x), top (+y), front (+z), and the mesh must not be mirrored (volume stays > 0).
    body = trimesh.creation.box([0.2, 0.2, 1.0])
    marker = trimesh.creation.box([0.1, 0.1, 0.1])
    marker.apply_translation([0.3, -0.3, 0.8])
    out = normalize_mesh(trimesh.util.concatenate([body, marker]), up_axis="z")
    assert (out.vertices[-8:].mean(axis=0) > 0.2).all()
    assert out.volume > 0


def test_normalize_mesh_rejects_bad_input():
    with pytest.raises(IbsrError):
        normalize_mesh(trimesh.Trimesh(), "y")
    with pytest.raises(IbsrError):
        normalize_mesh(trimesh.creation.box(), "w")
