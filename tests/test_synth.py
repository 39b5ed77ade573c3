"""Synthetic catalogs and query photos: determinism, validity, masks, file layout."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from ibsr.geometry.mesh import normalize_mesh
from ibsr.synth import (CATEGORIES, catalog_shape, iter_shapes, make_shape, render_photo,
                        render_query_photo, sample_photo_params, write_catalog, write_queries)
from ibsr.synth.photo import photo_background


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_at_least_eight_categories():
    assert {"chair", "table", "sofa", "bed", "lamp", "cabinet", "stool", "desk"} <= set(CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_makes_valid_meshes(category):
    for index in range(4):
        shape = catalog_shape(category, index, seed=3)
        mesh = shape.mesh
        assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        assert len(mesh.faces) < 5000  # small, so rendering stays fast
        assert shape.face_parts.shape == (len(mesh.faces),)
        assert shape.face_parts.max() < len(shape.part_names)
        assert mesh.bounds[0][1] >= -1e-9 and mesh.extents.min() > 0  # stands on the floor
        assert shape.shape_id == f"{category}/{category}_{index:04d}"
        json.dumps(shape.params)


def test_instances_differ_and_shapes_ignore_the_count():
    meshes = [catalog_shape("chair", i, seed=1).mesh for i in range(6)]
    keys = {hashlib.sha256(m.vertices.tobytes()).hexdigest() for m in meshes}
    assert len(keys) == 6
    again = list(iter_shapes(["chair"], 3, seed=1))
    assert all(np.array_equal(a.mesh.vertices, b.vertices) for a, b in zip(again, meshes))


def test_make_shape_takes_an_rng():
    a = make_shape("table", np.random.default_rng(5))
    b = make_shape("table", np.random.default_rng(5))
    assert np.array_equal(a.mesh.vertices, b.mesh.vertices)


@pytest.mark.parametrize("fmt", ["obj", "glb"])
def test_catalog_is_byte_identical_for_a_seed(tmp_path, fmt):
    write_catalog(tmp_path / "a", ["chair", "lamp"], 2, seed=11, fmt=fmt)
    write_catalog(tmp_path / "b", ["chair", "lamp"], 2, seed=11, fmt=fmt)
    write_catalog(tmp_path / "c", ["chair", "lamp"], 2, seed=12, fmt=fmt)
    a, b, c = (_digest(tmp_path / x / "catalog") for x in "abc")
    assert a == b and len(a) == 4
    assert "chair/chair_0001." + fmt in a
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    loaded = trimesh.load(tmp_path / "a" / "catalog" / "chair" / f"chair_0000.{fmt}", force="mesh")
    assert len(loaded.faces) == len(catalog_shape("chair", 0, 11).mesh.faces)


def _hits(shape, camera, size):
    """Independent re-ray-cast with trimesh's own ray API on the normalized mesh."""
    mesh = normalize_mesh(shape.mesh)
    origins, directions = camera.rays(size)
    tri = mesh.ray.intersects_first(origins, directions)
    return (tri >= 0).reshape(size, size)


@pytest.mark.parametrize("category", ["chair", "lamp"])
def test_mask_is_exactly_the_ray_hits(category):
    shape = catalog_shape(category, 0, seed=2)
    params = sample_photo_params(shape, np.random.default_rng(4))
    # the object's shadows and its anti-aliased edges are the other things it changes around it
    clean = replace(params, occluder=None, blur_sigma=0.0, noise_sigma=0.0, shadows=False, antialias=False)
    rgb, mask = render_photo(shape, clean, 64)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and mask.dtype == bool
    assert np.array_equal(mask, _hits(shape, clean.camera, 64))
    background = np.round(photo_background(clean, 64) * 255).astype(np.uint8)
    assert np.array_equal(rgb[~mask], background[~mask])


def test_occluder_cuts_the_mask():
    shape = catalog_shape("cabinet", 1, seed=2)
    params = sample_photo_params(shape, np.random.default_rng(0))
    occluded = replace(params, occluder=dict(center=(0.5, 0.5), radius=0.25, corners=7,
                                             color=(1.0, 0.0, 0.0), seed=3))
    _, mask = render_photo(shape, occluded, 64)
    hits = _hits(shape, params.camera, 64)
    assert mask.sum() < hits.sum() and not (mask & ~hits).any()


def test_query_photos_are_deterministic_and_off_rig():
    shape = catalog_shape("sofa", 0, seed=2)
    a = render_query_photo(shape, np.random.default_rng(9), size=48)
    b = render_query_photo(shape, np.random.default_rng(9), size=48)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[1].any()
    cams = [sample_photo_params(shape, np.random.default_rng(s)).camera for s in range(20)]
    assert all(0 <= c.azimuth_deg < 360 and 5 <= c.elevation_deg <= 45 for c in cams)
    assert len({round(c.fov_deg, 3) for c in cams}) == 20


def test_write_queries_layout(tmp_path):
    shapes = list(iter_shapes(["stool", "bed"], 2, seed=5))
    write_catalog(tmp_path, ["stool", "bed"], 2, seed=5)
    records = write_queries(tmp_path, shapes, 2, seed=5, size=48)
    lines = (tmp_path / "queries.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 8
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"image", "mask", "shape_id", "category"}
        image, mask = tmp_path / record["image"], tmp_path / record["mask"]
        assert image.suffix == ".jpg" and image.exists() and mask.exists()
        assert record["shape_id"].startswith(record["category"] + "/")
        stem = record["shape_id"].split("/")[1]
        assert (tmp_path / "catalog" / record["category"] / f"{stem}.obj").exists()
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        assert m.shape == (48, 48) and set(np.unique(m)) <= {0, 255} and m.max() == 255
    first = _digest(tmp_path / "queries")
    write_queries(tmp_path, shapes, 2, seed=5, size=48)
    assert _digest(tmp_path / "queries") == first


def test_cli_synth(tmp_path):
    from ibsr.cli.data import main

    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(main, ["synth", "--out", str(out), "--categories", "chair,desk",
                                  "--shapes-per-category", "2", "--queries-per-shape", "1",
                                  "--size", "32", "--format", "ply", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["shapes"] == 4 and summary["queries"] == 4
    assert (out / "catalog" / "desk" / "desk_0001.ply").exists()
    assert len((out / "queries.jsonl").read_text().splitlines()) == 4
    bad = runner.invoke(main, ["synth", "--out", str(out), "--categories", "chair,spaceship"])
    assert bad.exit_code == 2 and "spaceship" in bad.output


def test_first_photo_continues_the_photo_sequence(tmp_path):
    from ibsr.synth import catalog_shape, write_shape_queries

    shape = catalog_shape("stool", 0, seed=5)
    all_three = write_shape_queries(shape, tmp_path / "a", 3, seed=5, size=48)
    last_only = write_shape_queries(shape, tmp_path / "b", 1, seed=5, size=48, first=2)
    assert last_only[0]["image"] == all_three[2]["image"]
    assert (tmp_path / "a" / all_three[2]["image"]).read_bytes() == (tmp_path / "b" / last_only[0]["image"]).read_bytes()
