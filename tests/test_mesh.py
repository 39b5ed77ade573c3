import numpy as np
import pytest
import trimesh

from ibsr.indexer.mesh import MeshError, load_mesh


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
