"""ibsr.eval.real_sets and the ibsr-data commands around it: the fixed split of real meshes,
product families, real_dev's queries, photographing any catalog, merging datasets.

Everything runs on files generated here (procedural meshes renamed like Pix3D's); the real
folders in ../shared are never read by tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ibsr.cli.data import main as data_main
from ibsr.eval.queries import read_queries
from ibsr.eval.real_sets import (dev_entries, family, is_held_out, split_real_train, write_dev_queries,
                                 write_manifest)
from ibsr.indexer.discover import CatalogEntry, discover
from ibsr.train.data import load_dataset


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real-sets") / "synth"
    result = CliRunner().invoke(data_main, ["synth", "--out", str(root), "--categories", "chair,table",
                                            "--shapes-per-category", "3", "--queries-per-shape", "1",
                                            "--seed", "5", "--size", "64", "--json"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def real_like(synth_set, tmp_path_factory) -> Path:
    """A real_train-like folder: meshes/<category>/pix3d_<name>.obj, with a `misc` category."""
    root = tmp_path_factory.mktemp("real-sets") / "real_train"
    names = {"chair": ["pix3d_ikea_borje", "pix3d_ikea_ivar_2", "pix3d_other"], "table": ["pix3d_ikea_bjursta"],
             "misc": ["pix3d_thing"]}
    meshes = sorted((synth_set / "catalog").rglob("*.obj"))
    for (category, stems), mesh in zip([(c, s) for c, group in names.items() for s in group], meshes):
        target = root / "meshes" / category / f"{stems}.obj"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mesh, target)
    return root


def test_family_is_the_ikea_line_or_the_shape_itself():
    assert family("bookcase/pix3d_ikea_billy_3") == "billy"
    assert family("chair/pix3d_ikea_poang_1") == family("chair/pix3d_ikea_poang_2") == "poang"
    assert family("chair/pix3d_ikea_stefan") == "stefan"
    assert family("chair/pix3d_hm_chair_2") == "chair/pix3d_hm_chair_2"  # not IKEA: its own family
    assert family("chair/chair_0001") == "chair/chair_0001"


def test_held_out_part_is_a_pure_function_of_the_name(tmp_path):
    def entry(category, stem, folder="a"):
        return CatalogEntry(f"{category}/{stem}", category, tmp_path / folder / category / f"{stem}.ply")

    assert is_held_out(entry("misc", "anything")) and is_held_out(entry("tool", "x"))
    stems = [f"pix3d_model_{i}" for i in range(300)]
    held = [is_held_out(entry("chair", s)) for s in stems]
    assert held == [is_held_out(entry("chair", s, folder="b")) for s in stems]  # the folder plays no part
    assert 70 < sum(held) < 130  # about a third


def test_split_covers_every_mesh_once_and_manifests_round_trip(real_like, tmp_path):
    train, heldout = split_real_train(real_like)
    assert {e.shape_id for e in train} | {e.shape_id for e in heldout} == {e.shape_id for e in discover(real_like / "meshes")}
    assert not {e.shape_id for e in train} & {e.shape_id for e in heldout}
    assert "misc/pix3d_thing" in {e.shape_id for e in heldout}
    read_back = discover(write_manifest(train + heldout, tmp_path / "all.csv"))
    assert [(e.shape_id, e.category, e.path.resolve()) for e in read_back] == \
        sorted((e.shape_id, e.category, e.path.resolve()) for e in train + heldout)


def test_cli_real_split_writes_both_manifests(real_like, tmp_path):
    result = CliRunner().invoke(data_main, ["real-split", str(real_like), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(discover(tmp_path / "train.csv")) + len(discover(tmp_path / "heldout.csv")) == 5


def test_dev_queries_name_the_indexed_shape_and_keep_the_family(real_like, tmp_path):
    dev = tmp_path / "real_dev"
    shutil.copytree(real_like / "meshes", dev / "meshes")
    (dev / "photos").mkdir()
    (dev / "photos" / "a.jpg").write_bytes(b"not read here")
    (dev / "queries.jsonl").write_text(json.dumps({"image": "photos/a.jpg", "path": "chair/pix3d_ikea_borje.obj",
                                                   "category": "chair", "family": "borje"}) + "\n")
    out = write_dev_queries(dev, tmp_path / "q.jsonl")
    (query,) = read_queries(out)
    assert query.shape_id == "chair/pix3d_ikea_borje" and query.image == (dev / "photos" / "a.jpg").resolve()
    assert query.shape_id in {e.shape_id for e in dev_entries(dev)}
    assert json.loads(out.read_text())["family"] == "borje"


def test_photos_of_any_catalog_make_a_training_dataset(real_like, tmp_path):
    out = tmp_path / "photos"
    args = ["photos", str(real_like / "meshes"), "--out", str(out), "--photos-per-shape", "2", "--size", "64",
            "--seed", "3", "--json"]
    result = CliRunner().invoke(data_main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["shapes"] == 5 and summary["queries"] == 10 and not summary["skipped"]
    data = load_dataset(out, render_size=32, query_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert data.num_shapes == 5 and data.num_queries == 10 and data.queries[:, 3].max() == 255  # masks given
    first = sorted(p.read_bytes() for p in out.rglob("*.jpg"))
    assert CliRunner().invoke(data_main, args).exit_code == 0  # a rerun keeps what is there
    assert sorted(p.read_bytes() for p in out.rglob("*.jpg")) == first


def test_photos_report_a_bad_mesh_and_keep_going(real_like, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(real_like / "meshes", catalog)
    (catalog / "chair" / "broken.obj").write_text("v 0 0 0\n")
    result = CliRunner().invoke(data_main, ["photos", str(catalog), "--out", str(tmp_path / "out"),
                                            "--photos-per-shape", "1", "--size", "64", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["shapes"] == 5 and [Path(s["path"]).name for s in summary["skipped"]] == ["broken.obj"]


def test_merge_joins_datasets_and_photo_sets_and_refuses_clashing_ids(synth_set, real_like, tmp_path):
    photos = tmp_path / "photos"
    assert CliRunner().invoke(data_main, ["photos", str(real_like / "meshes"), "--out", str(photos),
                                          "--photos-per-shape", "1", "--size", "64"]).exit_code == 0
    merged = tmp_path / "merged"
    result = CliRunner().invoke(data_main, ["merge", str(synth_set), str(photos), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    data = load_dataset(merged, render_size=32, query_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert data.num_shapes == 6 + 5 and data.num_queries == 6 + 5
    assert {"chair", "table", "misc"} <= set(data.categories)
    # two photo sets of one catalog (two styles): each shape once, with the photos of both
    home = tmp_path / "home"
    assert CliRunner().invoke(data_main, ["photos", str(real_like / "meshes"), "--out", str(home), "--style", "home",
                                          "--photos-per-shape", "1", "--size", "64"]).exit_code == 0
    both = tmp_path / "both"
    assert CliRunner().invoke(data_main, ["merge", str(photos), str(home), "--out", str(both)]).exit_code == 0
    data = load_dataset(both, render_size=32, query_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert data.num_shapes == 5 and data.num_queries == 10
    # --max-per-shape: at most N photos of a shape from each dataset, the first in its file
    capped = tmp_path / "capped"
    result = CliRunner().invoke(data_main, ["merge", str(both), "--max-per-shape", "1", "--out", str(capped)])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line)["image"] for line in (capped / "queries.jsonl").read_text().splitlines()]
    first_style = [json.loads(line)["image"] for line in (both / "queries.jsonl").read_text().splitlines()][:5]
    assert kept == first_style and all(Path(image).is_relative_to(photos.resolve()) for image in kept)
    result = CliRunner().invoke(data_main, ["merge", str(both), "--max-per-shape", "0", "--out", str(capped)])
    assert result.exit_code != 0 and "--max-per-shape must be at least 1" in result.output
    # one id for two different meshes is refused
    records = [json.loads(line) for line in (synth_set / "catalog.jsonl").read_text().splitlines()]
    clash = tmp_path / "clash"
    clash.mkdir()
    swapped = {**records[0], "path": str((synth_set / records[1]["path"]).resolve())}
    (clash / "catalog.jsonl").write_text(json.dumps(swapped) + "\n")
    (clash / "queries.jsonl").write_text((synth_set / "queries.jsonl").read_text().splitlines()[0] + "\n")
    shutil.copytree(synth_set / "queries", clash / "queries")
    result = CliRunner().invoke(data_main, ["merge", str(synth_set), str(clash), "--out", str(tmp_path / "twice")])
    assert result.exit_code != 0 and "different meshes" in result.output and "Traceback" not in result.output


def test_photos_balance_categories_and_turn_the_front(real_like, tmp_path):
    """--per-category gives the rare categories more photos per mesh; --style home and
    --front-azimuth change the photos (and are part of what a rerun checks)."""
    out = tmp_path / "photos"
    args = ["photos", str(real_like / "meshes"), "--out", str(out), "--photos-per-shape", "1", "--size", "48",
            "--seed", "3", "--per-category", "3", "--style", "home", "--json"]
    result = CliRunner().invoke(data_main, args)
    assert result.exit_code == 0, result.output
    per_shape = {}
    for line in (out / "queries.jsonl").read_text().splitlines():
        shape = json.loads(line)["shape_id"]
        per_shape[shape] = per_shape.get(shape, 0) + 1
    counts = {shape.split("/")[0]: n for shape, n in per_shape.items()}
    assert counts == {"chair": 1, "table": 3, "misc": 3}  # 3 chairs share 3 photos; one table gets them all
    home = {p.name: p.read_bytes() for p in out.rglob("*.jpg")}
    turned = tmp_path / "turned"
    assert CliRunner().invoke(data_main, [*args[:3], str(turned), *args[4:], "--front-azimuth", "180"]).exit_code == 0
    assert {p.name: p.read_bytes() for p in turned.rglob("*.jpg")}.keys() == home.keys()
    chairs = list((turned / "photos" / "queries" / "chair").glob("*.jpg"))  # a table may look the same turned
    assert chairs and all(home[p.name] != p.read_bytes() for p in chairs)
    # the same folder asked for the default style is made again, not mistaken for the home photos
    assert CliRunner().invoke(data_main, [*args[:-3], "--json"]).exit_code == 0
    assert {p.name: p.read_bytes() for p in out.rglob("*.jpg")} != home
