"""`ibsr-index verify` finds each kind of damage, and `build --repair` undoes it exactly."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ibsr.cli.index import main as index_cli
from ibsr.errors import IbsrError
from ibsr.index.layout import FAISS_DIR, FAISS_IDS_FILE, META_FILE
from ibsr.index.verify import verify_index
from ibsr.indexer import Indexer
from index_helpers import assert_same_as_clean, full_rows, manufacture_duplicates, replace_row

CHAIR, LAMP = "chair/chair_0000", "lamp/lamp_0001"


def verify_cli(index, *extra):
    return CliRunner().invoke(index_cli, ["verify", "--index", str(index), "--quiet", *extra])


def repair(index, catalog, weights, **kwargs):
    return Indexer(index, weights=weights).build(catalog, progress=False, repair=True, **kwargs)


def views_of(index, shape_id) -> np.ndarray:
    return np.array(full_rows(index, f"shape_id = '{shape_id}'").to_pylist()[0]["views"], np.float32)


def test_a_clean_build_is_healthy(built_index):
    result = verify_cli(built_index)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("9 shapes, table version " f"{verify_index(built_index).table_version}: healthy")
    data = json.loads(verify_cli(built_index, "--json").output)
    assert data["healthy"] and data["shapes"] == 9 and data["problems"] == []


def test_duplicates_from_concurrent_old_builds_are_found_and_removed_by_any_build(index_copy, built_index, catalog,
                                                                                   tiny_weights):
    manufacture_duplicates(index_copy, [CHAIR, LAMP])
    result = verify_cli(index_copy)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("problem: ")]
    assert f"problem: {CHAIR}: appears 2 times in the table" in result.output
    assert f"problem: {LAMP}: appears 2 times in the table" in result.output
    assert all("--repair" in line or "reindex-faiss" in line for line in lines)
    assert "not declared the table's primary key" in result.output  # the old format, noted
    # A plain rerun (no --repair) no longer reports "9 unchanged" and keeps the duplicates.
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False)
    assert report.duplicates_removed == 2 and report.indexed == 2 and report.unchanged == 7
    assert_same_as_clean(index_copy, built_index)
    assert "primary key" not in " ".join(verify_index(index_copy).notes)  # declared by that build


def _infinite_view(index):
    # LanceDB refuses NaN in a vector column on write, not inf (a float16 overflow gives inf).
    views = views_of(index, CHAIR)
    views[5] = np.inf
    replace_row(index, CHAIR, views=views.tolist())


def _long_view(index):
    views = views_of(index, CHAIR)
    views[:64] *= 1.5  # view 0 no longer unit-norm
    replace_row(index, CHAIR, views=views.tolist())


def _moved_vector(index):
    vector = np.array(full_rows(index, f"shape_id = '{CHAIR}'").to_pylist()[0]["vector"], np.float32)
    replace_row(index, CHAIR, vector=np.roll(vector, 1).tolist())  # unit-norm, but not the views' mean


def _other_encoder(index):
    replace_row(index, CHAIR, encoder_id="0123456789abcdef")


def _bad_thumbnail(index):
    replace_row(index, CHAIR, thumbnail=b"\x89PNG\r\n\x1a\n truncated")


ROW_DAMAGE = [
    (_infinite_view, "views", "NaN or infinite"),
    (_long_view, "views", "not unit-norm"),
    (_moved_vector, "vector", "differs from the normalized mean of its views"),
    (_other_encoder, "encoder", "encoded by '0123456789abcdef'"),
    (_bad_thumbnail, "thumbnail", "not a decodable image"),
]


@pytest.mark.parametrize("damage, check, words", ROW_DAMAGE, ids=[c for _, c, _ in ROW_DAMAGE])
def test_damaged_rows_are_named_and_repaired(damage, check, words, index_copy, built_index, catalog, tiny_weights):
    damage(index_copy)
    result = verify_index(index_copy)
    row_problems = [p for p in result.problems if p.check not in ("prefilter", "flat")]  # derived: stale now
    assert [(p.check, p.where) for p in row_problems] == [(check, CHAIR)]
    assert words in row_problems[0].what and "--repair" in row_problems[0].fix
    cli = verify_cli(index_copy)
    assert cli.exit_code == 1 and f"problem: {CHAIR}: " in cli.output
    report = repair(index_copy, catalog, tiny_weights)
    assert report.repair["shapes_removed"] == 1 and report.indexed == 1
    assert_same_as_clean(index_copy, built_index)


def prefilter_problems(index):
    """The prefilter's problems (a new table version leaves the flat sidecar stale too: test_flat.py)."""
    return [p for p in verify_index(index).problems if p.check != "flat"]


def test_stale_or_broken_prefilter_is_found_and_rebuilt(index_copy, built_index, catalog, tiny_weights):
    replace_row(index_copy, CHAIR)  # a new table version, same content: the prefilter is stale
    [problem] = prefilter_problems(index_copy)
    assert problem.check == "prefilter" and "stale" in problem.what and "reindex-faiss" in problem.fix
    ids_file = index_copy / FAISS_DIR / FAISS_IDS_FILE
    data = json.loads(ids_file.read_text())
    data["shape_ids"] = data["shape_ids"][::-1]
    data["table_version"] = verify_index(index_copy).table_version
    ids_file.write_text(json.dumps(data))  # current version, wrong order
    [problem] = prefilter_problems(index_copy)
    assert "differ from the table's rows" in problem.what
    (index_copy / FAISS_DIR / data["index_file"]).write_bytes(b"not faiss")
    [problem] = prefilter_problems(index_copy)
    assert "unreadable" in problem.what and problem.where == str(ids_file)
    report = repair(index_copy, catalog, tiny_weights)
    assert report.repair["rebuild_prefilter"] and report.faiss is not None
    assert_same_as_clean(index_copy, built_index)


@pytest.mark.parametrize("edit, words", [
    (lambda meta: "{broken", "unreadable index metadata"),
    (lambda meta: json.dumps({**json.loads(meta), "format_version": 99}), "format version 99"),
    (lambda meta: json.dumps({**json.loads(meta), "embed_dim": 32}), "column 'views' is"),
], ids=["unreadable", "unknown-version", "wrong-dims"])
def test_damaged_metadata_is_found_and_the_index_rebuilt(edit, words, index_copy, built_index, catalog, tiny_weights):
    meta = index_copy / META_FILE
    meta.write_text(edit(meta.read_text()))
    result = verify_cli(index_copy)
    assert result.exit_code == 1 and words in result.output, result.output
    with pytest.raises(IbsrError, match="--repair|embed_dim"):  # a plain build refuses to write into it
        Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False)
    report = repair(index_copy, catalog, tiny_weights)
    moved = report.repair["moved_aside"]
    assert moved and report.indexed == 9
    assert (index_copy / "damaged").is_dir() and any((index_copy / "damaged").rglob(META_FILE))  # kept, not deleted
    assert_same_as_clean(index_copy, built_index)


def test_verify_refuses_a_directory_that_is_no_index(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = verify_cli(tmp_path)
    assert result.exit_code == 1 and "not an ibsr index" in result.output
