import json

import pytest

from ibsr.errors import IbsrError
from ibsr.indexer.discover import discover


def touch(path, text="v 0 0 0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_layouts(tmp_path):
    touch(tmp_path / "chair" / "a.obj")
    touch(tmp_path / "chair" / "b.PLY")
    touch(tmp_path / "chair" / "notes.txt")
    touch(tmp_path / "table" / "t1" / "model.obj")  # Pix3D style
    touch(tmp_path / "table" / "t1" / "other.obj")
    touch(tmp_path / "sofa" / "s9" / "models" / "model_normalized.obj")  # ShapeNet style
    entries = discover(tmp_path)
    assert [(e.shape_id, e.category, e.path.name) for e in entries] == [
        ("chair/a", "chair", "a.obj"), ("chair/b", "chair", "b.PLY"),
        ("sofa/s9", "sofa", "model_normalized.obj"), ("table/t1", "table", "model.obj")]


def test_manifests(tmp_path):
    touch(tmp_path / "m" / "x.obj")
    (tmp_path / "cat.csv").write_text("shape_id,category,path\nx1,chair,m/x.obj\n")
    (tmp_path / "cat.jsonl").write_text(json.dumps({"shape_id": "x2", "category": "bed", "path": "m/x.obj"}) + "\n\n")
    [csv_entry] = discover(tmp_path / "cat.csv")
    [jsonl_entry] = discover(tmp_path / "cat.jsonl")
    assert (csv_entry.shape_id, csv_entry.category, csv_entry.path) == ("x1", "chair", tmp_path / "m" / "x.obj")
    assert (jsonl_entry.shape_id, jsonl_entry.category) == ("x2", "bed")


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "catalog not found"),
    (lambda p: p.mkdir(), "catalog is empty"),
    (lambda p: touch(p / "chair" / "a.txt"), "no supported meshes"),
    (lambda p: (touch(p / "chair" / "a.obj"), touch(p / "chair" / "a.off")), "names two files"),
])
def test_bad_catalogs(tmp_path, setup, message):
    catalog = tmp_path / "catalog"
    setup(catalog)
    with pytest.raises(IbsrError, match=message) as info:
        discover(catalog)
    assert str(catalog) in str(info.value)


def test_bad_manifest_lines(tmp_path):
    (tmp_path / "a.csv").write_text("shape_id,category,path\nx,,m.obj\n")
    with pytest.raises(IbsrError, match="line 2: missing category"):
        discover(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text("{not json\n")
    with pytest.raises(IbsrError, match="line 1: not JSON"):
        discover(tmp_path / "b.jsonl")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(IbsrError, match="manifest"):
        discover(tmp_path / "c.txt")
