"""benchmarks/scale.py at a few hundred shapes: it writes a valid index and reports every figure."""

import json
import subprocess
import sys

from ibsr.index.flat import read_flat
from ibsr.index.table import ShapeReader
from index_helpers import ENV, index_cmd, run


def test_scale_benchmark_writes_a_valid_index_and_reports_every_field(tmp_path, tiny_weights):
    index, out = tmp_path / "scale", tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "benchmarks/scale.py", "--shapes", "300", "--index", str(index),
                           "--work", str(tmp_path / "base"), "--weights", str(tiny_weights), "--base-categories", "3",
                           "--base-per-category", "2", "--repeats", "1", "--probe-modes", "none", "--json", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    verify = run(index_cmd("verify", "--index", index, "--quiet"))
    assert verify.returncode == 0, verify.stdout
    reader = ShapeReader(index)
    assert read_flat(index, reader.version) is not None and (index / "faiss").is_dir()
    info = reader.info()
    assert info["shapes"] == 300 and len(info["categories"]) == 50
    report = json.loads(out.read_text())
    assert report["shapes"] == 300 and report["open_source"] == "flat" and report["cpu"]
    assert report["bare_import_s"] > 0 and report["open_s"] > 0 and report["peak_rss_gb"] > 0
    assert report["open_from_table_s"] > 0
    for mode in ("category", "none"):
        run_ = report["search_process"][mode]
        assert run_["wall_s"] > 0 and run_["peak_rss_gb"] > 0 and 0 < run_["shapes_scored"] <= 1
    rows = report["modes"]
    assert {r["mode"] for r in rows.values()} == {"category", "ann", "none", "dense"}
    assert {r["batch"] for r in rows.values()} == {1, 6}  # B = 64, clamped to the 6 photos
    for r in rows.values():
        assert r["queries_per_s"] > 0 and 0 < r["fraction_scored"] <= 1
    assert rows["dense_b1"]["fraction_scored"] == 1 and rows["none_b1"]["fraction_scored"] <= 1
    assert "| none |" in proc.stdout and "ibsr-search --prefilter none" in proc.stdout
    [serve] = report["serve"]  # one probe: --probe-modes none
    assert (serve["code"], serve["mode"], serve["source"]) == ("this", "none", "flat")
    assert serve["imports_s"] > 0 and serve["open_s"] > 0
    assert 0 < serve["answer_s"] <= serve["imports_to_first_answer_s"]
    assert serve["cpu_imports_to_first_answer_s"] > 0 and serve["reload_s"] > 0
    assert serve["after_first_answer"]["peak_rss_gb"] > 0 and serve["after_reload"]["anon_gb"] > 0
    assert "| this | none | flat |" in proc.stdout
