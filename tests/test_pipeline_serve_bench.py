"""benchmarks/pipeline.py --runtime and benchmarks/serve.py --photo-kinds / --runtime, at toy size."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ibsr.synth import iter_shapes, write_queries
from index_helpers import ENV


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path("benchmarks") / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_builds_once_per_runtime_and_compares_them(tmp_path, tiny_weights):
    out = tmp_path / "pipeline.json"
    proc = subprocess.run([sys.executable, "benchmarks/pipeline.py", "--shapes-per-category", "1", "--photos", "8",
                           "--weights", str(tiny_weights), "--workers", "1", "--runtime", "torch", "onnx",
                           "--no-search", "--json", str(out)],
                          capture_output=True, text=True, env={**ENV, "IBSR_RUNTIME": "auto"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [run["runtime"] for run in report["runs"]] == ["torch", "onnx"]
    for run in report["runs"]:
        assert run["build"]["shapes"] == 8 and run["build"]["overall_shapes_per_s"] > 0
        assert "search" not in run and run["started_utc"]
    assert report["runs"][0]["build"]["vs_baseline_overall"] == 1.0
    assert report["machine"]["cpuinfo"]["model"]
    assert "| torch | 8 |" in proc.stdout and "| onnx | 8 |" in proc.stdout


def test_serve_photo_requests_with_and_without_mask_files(tmp_path):
    serve = _load("serve")
    write_queries(tmp_path, list(iter_shapes(["chair"], 2, 3)), 1, 3)
    masked = serve.photo_requests(tmp_path, 5, masked=True)
    plain = serve.photo_requests(tmp_path, 5, masked=False)
    assert len(masked) == len(plain) == 2
    assert all(set(r["files"]) == {"image", "mask"} for r in masked)
    assert all(set(r["files"]) == {"image"} for r in plain) and plain[0]["data"] == {"topk": "5"}
    assert plain[0]["files"]["image"] == masked[0]["files"]["image"]


def test_serve_server_gets_its_runtime_in_its_environment(monkeypatch):
    serve = _load("serve")
    seen = {}

    class Stop(Exception):
        pass

    def popen(cmd, env=None, **kwargs):
        seen["env"] = env
        raise Stop

    monkeypatch.setattr(serve.subprocess, "Popen", popen)
    monkeypatch.setenv("IBSR_RUNTIME", "auto")
    for runtime, expected in (("torch", "torch"), ("onnx", "onnx"), (None, "auto")):
        try:
            serve.Server(Path("index"), [], {}, runtime)
        except Stop:
            pass
        assert seen["env"]["IBSR_RUNTIME"] == expected


def test_serve_server_runs_the_ibsr_of_another_tree(tmp_path):
    """--code LABEL=DIR: the server imports ibsr from DIR, not from this checkout."""
    serve = _load("serve")
    fake = tmp_path / "before" / "ibsr" / "cli"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "serve.py").write_text("import sys\nsys.exit('the other tree: ' + ' '.join(sys.argv[1:3]))\n")
    with pytest.raises(RuntimeError, match="the other tree: --index .*index"):
        serve.Server(Path("index"), [], {}, None, code=tmp_path / "before")


def test_serve_real_photo_requests_read_the_image_of_each_line(tmp_path):
    """--photo-kinds real: a real_dev-like folder (queries.jsonl with image paths, no masks)."""
    serve = _load("serve")
    (tmp_path / "photos").mkdir()
    for name, data in (("a.jpg", b"first"), ("b.jpg", b"second")):
        (tmp_path / "photos" / name).write_bytes(data)
    (tmp_path / "queries.jsonl").write_text('{"image": "photos/a.jpg", "category": "chair"}\n\n'
                                            '{"image": "photos/b.jpg", "family": "billy"}\n')
    requests = serve.real_photo_requests(tmp_path, 7)
    assert [r["files"]["image"] for r in requests] == [("a.jpg", b"first"), ("b.jpg", b"second")]
    assert all(r["data"] == {"topk": "7"} and set(r["files"]) == {"image"} for r in requests)


def test_serve_real_photos_missing_is_one_line(tmp_path):
    serve = _load("serve")
    with pytest.raises(SystemExit, match="no queries.jsonl there"):
        serve.real_photo_requests(tmp_path / "absent", 5)
