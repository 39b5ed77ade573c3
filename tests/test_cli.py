"""The commands as a user runs them: one-line errors, no tracebacks, JSON and HTML output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ibsr.cli import index as index_cli
from ibsr.cli import search as search_cli


def run(cli, args, env=None):
    result = CliRunner().invoke(cli.main, [str(a) for a in args], env=env)
    return result


def photo(tmp_path, name="q.png", size=64):
    rgb = np.full((size, size, 3), 230, np.uint8)
    rgb[16:48, 20:44] = (90, 60, 30)
    path = tmp_path / name
    Image.fromarray(rgb).save(path)
    return path


def assert_one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_info_and_search_json(built_index, tiny_weights, tmp_path):
    info = run(index_cli, ["info", "--index", built_index, "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["shapes"] == 9
    q1, q2 = photo(tmp_path, "a.png"), photo(tmp_path, "b.jpg")
    out = run(search_cli, [q1, q2, "--index", built_index, "--weights", tiny_weights, "--topk", 4, "--json",
                           "--html", tmp_path / "out.html"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.output)
    assert [r["query"] for r in results] == [str(q1), str(q2)]
    assert all(len(r["hits"]) == 4 and r["mask_source"] == "grabcut" for r in results)
    page = (tmp_path / "out.html").read_text()
    assert page.count("<section>") == 2 and page.count("data:image/png;base64,") == 2 * (2 + 4)


def test_search_defaults_are_the_searchers(built_index, tiny_weights, tmp_path, monkeypatch):
    from ibsr.searcher import Searcher

    monkeypatch.setenv("IBSR_PRECISION", "float32")
    q = photo(tmp_path)
    out = run(search_cli, [q, "--index", built_index, "--weights", tiny_weights, "--topk", 9, "--json"])
    assert out.exit_code == 0, out.output
    got = {h["shape_id"]: h["score"] for h in json.loads(out.output)[0]["hits"]}
    expected = {h.shape_id: h.score for h in Searcher(built_index, weights=tiny_weights).search([q], topk=9)[0].hits}
    assert got == pytest.approx(expected, abs=1e-6)  # the Python API and the command share one SearchOptions


def test_default_index_from_environment_and_table(built_index, tiny_weights, tmp_path):
    q = photo(tmp_path)
    out = run(search_cli, [q, "--weights", tiny_weights, "--topk", 3], env={"IBSR_INDEX": str(built_index)})
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[1].split()[:2] == ["rank", "score"] and len(lines) == 2 + 3


def test_errors_are_one_line(built_index, tiny_weights, other_weights, tmp_path):
    q = photo(tmp_path)
    (tmp_path / "not.jpg").write_text("text")
    cases = [
        (search_cli, [q, "--index", tmp_path / "missing", "--weights", tiny_weights], ["missing", "no index"]),
        (search_cli, [q, "--index", built_index, "--weights", other_weights], ["encoder"]),
        (search_cli, [tmp_path / "not.jpg", "--index", built_index, "--weights", tiny_weights], ["not.jpg"]),
        (search_cli, [q, "--index", built_index, "--weights", tiny_weights, "--topk", 0], ["--topk"]),
        (search_cli, [q, "--index", built_index, "--weights", tiny_weights, "--topk", 99], ["--topk 9"]),
        (search_cli, [q, "--index", built_index, "--weights", tmp_path / "none.pt"], ["none.pt"]),
        (index_cli, ["build", tmp_path / "nocatalog", "--index", tmp_path / "i", "--weights", tiny_weights],
         ["nocatalog"]),
        (index_cli, ["info", "--index", tmp_path], ["not an ibsr index"]),
    ]
    for cli, args, needles in cases:
        assert_one_line_error(run(cli, args), *needles)


def two_object_photo(tmp_path, name="two.png"):
    """A 96 x 64 photo: a brown object on the left, a blue one on the right."""
    rgb = np.full((64, 96, 3), 230, np.uint8)
    rgb[16:48, 8:36] = (90, 60, 30)
    rgb[12:52, 56:88] = (30, 60, 200)
    path = tmp_path / name
    Image.fromarray(rgb).save(path)
    return path


def test_search_with_a_box(built_index, tiny_weights, tmp_path):
    from ibsr.photos.box import Box
    from ibsr.searcher import Searcher

    q = two_object_photo(tmp_path)
    args = [q, "--index", built_index, "--weights", tiny_weights, "--topk", 9, "--mask-method", "grabcut"]
    out = run(search_cli, [*args, "--box", "48,-10,120.5,60", "--json", "--html", tmp_path / "out.html"])
    assert out.exit_code == 0, out.output
    [result] = json.loads(out.output)
    assert result["box"] == [48, 0, 96, 60]  # clipped to the 96 x 64 photo: the box used
    [expected] = Searcher(built_index, weights=tiny_weights, mask_method="grabcut").search(
        [q], topk=9, boxes=[Box(48, 0, 96, 60)])
    scores = {h["shape_id"]: h["score"] for h in result["hits"]}
    assert scores == pytest.approx({h.shape_id: h.score for h in expected.hits}, abs=1e-6)
    assert "<section>" in (tmp_path / "out.html").read_text()
    table = run(search_cli, [*args, "--box", "48,0,96,60"])
    assert table.exit_code == 0 and "(mask: grabcut, box: 48,0,96,60)" in table.output.splitlines()[0]
    whole = json.loads(run(search_cli, [*args, "--json"]).output)[0]
    assert whole["box"] is None
    assert {h["shape_id"]: h["score"] for h in whole["hits"]} != pytest.approx(scores, abs=1e-4)  # another crop


@pytest.mark.parametrize("boxes, needles", [
    (["10,20,30"], ["box '10,20,30' is not four numbers", "X0,Y0,X1,Y1"]),
    (["nan,0,10,10"], ["box nan,0,10,10", "finite"]),
    (["40,0,10,30"], ["box 40,0,10,30 is empty or inverted"]),
    (["10,10,10,30"], ["box 10,10,10,30 is empty or inverted"]),
    (["100,0,200,30"], ["two.png: box 100,0,200,30 lies outside the 96x64 image", "within 0,0,96,64"]),
    (["0,0,10,10", "0,0,20,20"], ["2 --box for 1 images"]),
])
def test_bad_boxes_are_one_line_errors(built_index, tiny_weights, tmp_path, boxes, needles):
    q = two_object_photo(tmp_path)
    args = [q, "--index", built_index, "--weights", tiny_weights, "--topk", 3]
    for box in boxes:
        args += ["--box", box]
    assert_one_line_error(run(search_cli, args), *needles)


def test_real_process_exit_status(tmp_path, tiny_weights):
    """Not CliRunner: the installed entry point's real stderr and exit status."""
    proc = subprocess.run([sys.executable, "-m", "ibsr.cli.index", "build", str(tmp_path / "none"),
                           "--index", str(tmp_path / "i"), "--weights", str(tiny_weights)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cli, sub", [(index_cli, ["build", "--help"]), (index_cli, ["info", "--help"]),
                                      (search_cli, ["--help"])])
def test_help_documents_options(cli, sub):
    out = run(cli, sub)
    assert out.exit_code == 0
    assert "--index" in out.output and "--json" in out.output
    if cli is search_cli:
        assert "--box X0,Y0,X1,Y1" in out.output and "clipped" in out.output
