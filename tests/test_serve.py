"""ibsr-serve: endpoints and their errors, batching, overload, timeouts, hot reload during a build."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hmac
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import httpx2 as httpx
import lancedb
import numpy as np
import pytest
import trimesh
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from ibsr.cli import search as search_cli
from ibsr.cli import serve as serve_cli
from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import DEFAULT_RIG
from ibsr.index import writer
from ibsr.index.layout import META_FILE, IndexMeta
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.index.writer import IndexWriter
from ibsr.indexer import Indexer
from ibsr.indexer.discover import catalog_relative
from ibsr.photos.image import MAX_PIXELS
from ibsr.searcher import SearchOptions
from ibsr.searcher.prefilters import prefilter_help, prefilter_names
from ibsr.serve import SearchService, ServeConfig, create_app, thread_budget, usable_cpus
from ibsr.synth import write_catalog

from conftest import CATEGORIES, SHAPES_PER_CATEGORY
from serve_util import mesh_photo, png_bytes, running_server
from test_index_search import float64_scores

N_SHAPES = len(CATEGORIES) * SHAPES_PER_CATEGORY


def make_service(index, weights, **overrides) -> SearchService:
    overrides.setdefault("reload_interval_s", 0)
    return SearchService(ServeConfig(index_dir=index, weights=weights, **overrides))


@pytest.fixture(scope="module")
def client(built_index, tiny_weights):
    with TestClient(create_app(make_service(built_index, tiny_weights))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photos(catalog):
    """(name, photo PNG, mask PNG) of one mesh per category."""
    meshes = [sorted((catalog / c).iterdir())[1] for c in CATEGORIES]
    return [(f"{m.stem}.png", *mesh_photo(m, view=k)) for k, m in enumerate(meshes)]


def post(client, photo: bytes, mask: bytes | None = None, name="q.png", **fields):
    fields.setdefault("topk", 3)  # the test index has 9 shapes, fewer than the default 10
    files = {"image": (name, photo, "image/png")}
    if mask is not None:
        files["mask"] = ("m.png", mask, "image/png")
    return client.post("/search", files=files, data={k: str(v) for k, v in fields.items()})


def hits_of(body: dict) -> list[tuple[str, int]]:
    return [(h["shape_id"], h["best_view"]) for h in body["hits"]]


def as_served(cli_answer: dict, catalog: Path, name: str) -> dict:
    """What the service answers where `ibsr-search --json` printed `cli_answer`: the upload's
    name as `query`, and each source path relative to the catalog root (no server folders)."""
    hits = [{**h, "source_path": Path(h["source_path"]).relative_to(catalog).as_posix()} for h in cli_answer["hits"]]
    return {**cli_answer, "query": name, "hits": hits}


# --------------------------------------------------------------------------- endpoints


def test_options_lists_the_registered_prefilters_and_the_defaults(client):
    options = client.get("/options").json()
    assert [(p["name"], p["help"]) for p in options["prefilters"]] == list(prefilter_help().items())
    assert options["defaults"] == dataclasses.asdict(SearchOptions())


def test_health_reports_the_served_index(client, built_index):
    health = client.get("/health").json()
    info = ShapeReader(built_index).info()
    assert health["shapes"] == N_SHAPES == info["shapes"]
    assert health["version"] == info["table_version"]
    assert health["encoder_id"] == info["encoder_id"]
    # what runs each network, so that an operator can tell why two machines differ slightly;
    # the tests run without the mask network (IBSR_MASK_WEIGHTS, conftest.py)
    assert health["networks"]["mask"] == "grabcut"
    assert health["networks"]["queries"] in ("onnx float32", "onnx int8", "torch float32", "torch bf16")


def test_search_answers_what_ibsr_search_json_prints(client, built_index, tiny_weights, photos, tmp_path, catalog):
    name, photo, mask = photos[1]
    (tmp_path / name).write_bytes(photo)
    (tmp_path / "m.png").write_bytes(mask)
    for with_mask in (False, True):
        args = [str(tmp_path / name), "--index", str(built_index), "--weights", str(tiny_weights), "--topk", "5",
                "--json"] + (["--mask", str(tmp_path / "m.png")] if with_mask else [])
        cli = CliRunner().invoke(search_cli.main, args)
        assert cli.exit_code == 0, cli.output
        [expected] = json.loads(cli.output)
        response = post(client, photo, mask if with_mask else None, name=name, topk=5)
        assert response.status_code == 200
        body = response.json()
        assert body["query"] == name  # the upload's name, where the CLI prints the path it was given
        assert body == as_served(expected, catalog, name)
        assert body["mask_source"] == ("file" if with_mask else "grabcut")
        assert len(body["hits"]) == 5 and response.headers["X-Ibsr-Version"] == str(ShapeReader(built_index).version)


def test_search_options_and_mask_preview(client, built_index, photos):
    _, photo, mask = photos[0]
    body = post(client, photo, mask, topk=2, category="lamp").json()
    assert [h["category"] for h in body["hits"]] == ["lamp", "lamp"] and body["predicted_categories"] == ["lamp"]
    everything = post(client, photo, mask, topk=N_SHAPES, prefilter="none").json()
    assert sorted(h["shape_id"] for h in everything["hits"]) == sorted(IndexSnapshot.open(built_index).shape_ids)
    ann = post(client, photo, mask, topk=3, prefilter="ann", candidates=4).json()
    assert len(ann["hits"]) == 3
    pruned = post(client, photo, mask, topk=3, prefilter="none").json()  # the pruned exact top-k
    assert [h["shape_id"] for h in pruned["hits"]] == [h["shape_id"] for h in everything["hits"][:3]]
    preview = client.post("/search?mask_preview=true", files={"image": ("q.png", photo), "mask": ("m.png", mask)},
                          data={"topk": "3"})
    uri = preview.json()["mask_preview"]
    assert uri.startswith("data:image/png;base64,")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert (shown > 127).tolist() == (np.asarray(Image.open(io.BytesIO(mask))) > 127).tolist()


def test_box_field_searches_inside_the_box_as_ibsr_search_box(client, built_index, tiny_weights, photos, catalog,
                                                               tmp_path):
    name, photo, mask = photos[1]
    (tmp_path / name).write_bytes(photo)
    cli = CliRunner().invoke(search_cli.main, [str(tmp_path / name), "--index", str(built_index), "--weights",
                                               str(tiny_weights), "--topk", "5", "--json", "--box", "10,-4,70.5,90"])
    assert cli.exit_code == 0, cli.output
    [expected] = json.loads(cli.output)
    response = client.post("/search?mask_preview=true", files={"image": (name, photo)},
                           data={"topk": "5", "box": "10,-4,70.5,90"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["box"] == [10, 0, 71, 90]  # the box used: clipped to the 96 x 96 photo, whole pixels
    assert {**body, "mask_preview": None} == {**as_served(expected, catalog, name), "mask_preview": None}
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_preview"].split(",", 1)[1]))))
    outside = np.ones(shown.shape, bool)
    outside[0:90, 10:71] = False
    assert shown.any() and not shown[outside].any()  # nothing outside the box is object
    with_mask = post(client, photo, mask, box="0,0,48,96").json()
    assert with_mask["mask_source"] == "file" and with_mask["box"] == [0, 0, 48, 96]
    assert post(client, photo, box="").json()["box"] is None  # an empty form field: no box


def test_bad_box_answers_400_naming_it(client, photos):
    _, photo, _ = photos[0]
    cases = [
        ("10,20,30", "box '10,20,30' is not four numbers"),
        ("nan,0,10,10", "box nan,0,10,10: coordinates must be finite"),
        ("50,0,10,10", "box 50,0,10,10 is empty or inverted"),
        ("10,10,10,30", "is empty or inverted"),
        ("100,0,200,50", "image 'q.png': box 100,0,200,50 lies outside the 96x96 image"),
    ]
    for box, message in cases:
        response = post(client, photo, box=box)
        assert response.status_code == 400, (box, response.text)
        assert message in response.json()["error"] and "X0,Y0,X1,Y1" in response.json()["error"], response.json()
    assert post(client, photo, box="0,0,96,96").status_code == 200  # still serving


def test_bad_input_answers_4xx_json_naming_the_problem(client, photos):
    _, photo, mask = photos[0]
    truncated = photo[: len(photo) // 2]
    small_mask = png_bytes(np.full((10, 10), 255, np.uint8))
    empty_mask = png_bytes(np.zeros((96, 96), np.uint8))
    cases = [
        (dict(photo=b"this is not an image"), 400, "image 'q.png': not an image"),
        (dict(photo=b""), 400, "image 'q.png': not an image"),
        (dict(photo=truncated), 400, "image 'q.png'"),
        (dict(photo=photo, mask=small_mask), 400, "mask 'm.png': mask is 10x10 but the image is 96x96"),
        (dict(photo=photo, mask=empty_mask), 400, "mask 'm.png': mask is empty"),
        (dict(photo=photo, topk=0), 400, "topk"),
        (dict(photo=photo, topk="ten"), 400, "topk"),
        (dict(photo=photo, topk=N_SHAPES + 1), 400, f"larger than the index ({N_SHAPES} shapes)"),
        (dict(photo=photo, prefilter="bogus"), 400, "prefilter"),
        (dict(photo=photo, prefilter="exact"), 400, "'none'"),  # its former name: refused, naming it
        (dict(photo=photo, candidates=0), 400, "candidates"),
        (dict(photo=photo, category="spaceship"), 400, "no shapes of category 'spaceship'"),
    ]
    for kwargs, status, message in cases:
        response = post(client, kwargs.pop("photo"), kwargs.pop("mask", None), **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert message in response.json()["error"], (kwargs, response.json())
    missing = client.post("/search", data={"topk": "3"})
    assert missing.status_code == 400 and "image" in missing.json()["error"]
    assert post(client, photo, mask).status_code == 200  # still serving


def test_too_large_upload_is_refused_before_decoding(built_index, tiny_weights, photos):
    _, photo, _ = photos[0]
    with TestClient(create_app(make_service(built_index, tiny_weights, max_upload_bytes=len(photo) // 2))) as client:
        response = post(client, photo)
        assert response.status_code == 413
        assert "over the" in response.json()["error"] and "--max-upload-mb" in response.json()["error"]
        assert client.get("/health").json()["requests"] == 0


def test_thumbnail_mesh_and_rig(client, built_index, catalog):
    reader = ShapeReader(built_index)
    shape_id = "table/table_0001"
    thumbnail = client.get(f"/shapes/{shape_id}/thumbnail.png")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content == reader.thumbnails([shape_id])[shape_id]
    glb = client.get(f"/shapes/{shape_id}/mesh.glb")
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    served = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh", process=False)
    indexed = load_mesh(catalog / "table" / "table_0001.obj")  # what the index rendered
    assert np.allclose(served.vertices, indexed.vertices, atol=1e-6) and len(served.faces) == len(indexed.faces)
    assert np.linalg.norm(served.vertices, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    for path in (f"/shapes/table/nope/mesh.glb", f"/shapes/nope/thumbnail.png"):
        missing = client.get(path)
        assert missing.status_code == 404 and "no shape" in missing.json()["error"]
    rig = client.get("/rig").json()
    assert rig["fov_deg"] == DEFAULT_RIG.fov_deg and len(rig["cameras"]) == DEFAULT_RIG.views
    assert np.allclose([c["position"] for c in rig["cameras"]], DEFAULT_RIG.eyes(), atol=1e-6)
    assert rig["cameras"][0]["position"][0] == pytest.approx(0) and rig["cameras"][0]["position"][2] > 0  # front


def test_mesh_of_a_deleted_source_file_is_a_404(tmp_path, catalog, tiny_weights):
    small = tmp_path / "catalog" / "chair"
    small.mkdir(parents=True)
    for mesh in sorted((catalog / "chair").iterdir())[:2]:
        shutil.copy(mesh, small / mesh.name)
    Indexer(tmp_path / "index", weights=tiny_weights, workers=0).build(tmp_path / "catalog", progress=False)
    with TestClient(create_app(make_service(tmp_path / "index", tiny_weights))) as client:
        shape_id = f"chair/{sorted(small.iterdir())[0].stem}"
        assert client.get(f"/shapes/{shape_id}/mesh.glb").status_code == 200
        sorted(small.iterdir())[0].unlink()
        gone = client.get(f"/shapes/{shape_id}/mesh.glb")
        assert gone.status_code == 404 and "source mesh is gone" in gone.json()["error"]
        assert client.get(f"/shapes/{shape_id}/thumbnail.png").status_code == 200  # stored in the index


def test_openapi_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/health", "/search", "/rig", "/shapes/{shape_id}/mesh.glb", "/shapes/{shape_id}/thumbnail.png"} <= set(
        spec["paths"])
    form = spec["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = form["$ref"].rsplit("/", 1)[1]
    fields = spec["components"]["schemas"][ref]["properties"]
    assert {"image", "mask", "topk", "category", "prefilter", "candidates", "box"} <= set(fields)
    assert fields["prefilter"]["enum"] == list(prefilter_names())
    page = client.get("/")
    assert page.status_code == 200 and "importmap" in page.text
    script = client.get("/static/app.js").text
    assert not any(scheme in text for scheme in ("http://", "https://") for text in (page.text, script))  # no CDN
    assert client.get("/static/vendor/three/three.module.js").status_code == 200
    assert client.get("/static/vendor/three/LICENSE").text.startswith("The MIT License")


# --------------------------------------------------------------------------- batching, overload, timeout


def test_prepare_makes_the_networks_first_use_before_any_request(built_index, tiny_weights, tmp_path, monkeypatch):
    """`ibsr-serve` calls prepare() before it listens: the ONNX export happens there, not inside
    the first request's timeout."""
    monkeypatch.setenv("IBSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IBSR_RUNTIME", "onnx")  # onnxruntime is a dependency: the export must happen
    service = make_service(built_index, tiny_weights)
    assert service.prepare() > 0
    exported = [p.name.split("-")[0] for p in (tmp_path / "cache" / "onnx").glob("*.onnx")]
    assert exported == ["queries"]  # no mask network in the tests (conftest.py): GrabCut
    assert service.stats["requests"] == 0


def test_health_names_what_runs_the_mask_network_when_there_is_one(built_index, tiny_weights, tmp_path, monkeypatch):
    from ibsr.model.segmenter import MaskConfig, MaskNet, save_mask_checkpoint

    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(save_mask_checkpoint(MaskNet(MaskConfig(size=64)), tmp_path / "m.pt")))
    service = make_service(built_index, tiny_weights)
    monkeypatch.setenv("IBSR_RUNTIME", "onnx")
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    assert service.health()["networks"] == {"queries": "onnx int8", "mask": "onnx int8"}
    monkeypatch.setenv("IBSR_PRECISION", "float32")
    assert service.health()["networks"] == {"queries": "onnx float32", "mask": "onnx float32"}
    monkeypatch.setenv("IBSR_RUNTIME", "torch")
    assert service.health()["networks"] == {"queries": "torch float32", "mask": "torch float32"}


def test_thread_budget_gives_the_torch_pool_every_core():
    assert thread_budget(1) == (1, 2)
    assert thread_budget(2) == (2, 4)
    assert thread_budget(16) == (16, 32)
    assert thread_budget(16, torch_threads=3, decode_threads=2) == (3, 2)
    assert thread_budget(usable_cpus())[0] == usable_cpus()


def _post_all(base: str, requests: list[dict], concurrent: bool) -> list[httpx.Response]:
    """POST each request (files/data); concurrently = one thread each, released together."""
    def send(i, out, barrier=None):
        with httpx.Client(base_url=base, timeout=60) as http:
            if barrier is not None:
                barrier.wait()
            out[i] = http.post("/search", **requests[i])

    out = [None] * len(requests)
    if not concurrent:
        for i in range(len(requests)):
            send(i, out)
        return out
    barrier = threading.Barrier(len(requests))
    threads = [threading.Thread(target=send, args=(i, out, barrier)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def test_concurrent_requests_share_batches_and_give_sequential_answers(built_index, tiny_weights, photos):
    requests = []
    for k, (name, photo, mask) in enumerate(photos * 2):
        data = [{"topk": "3"}, {"topk": str(N_SHAPES), "prefilter": "none"}, {"topk": "2", "category": "chair"}][k % 3]
        requests.append({"files": {"image": (name, photo), "mask": ("m.png", mask)}, "data": data})
    # encode_batch 4: a batch of 6 is encoded as 4 + 2, through both encoder paths
    service = make_service(built_index, tiny_weights, batch_wait_ms=400, max_batch=16, encode_batch=4)
    with running_server(create_app(service)) as base:
        sequential = _post_all(base, requests, concurrent=False)
        after_sequential = dict(service.stats)
        concurrent = _post_all(base, requests, concurrent=True)
    assert after_sequential["batches"] == len(requests)  # one at a time: one batch each
    batches = service.stats["batches"] - after_sequential["batches"]
    assert batches < len(requests) and service.stats["largest_batch"] >= 2  # they shared batches
    for one, many in zip(sequential, concurrent):
        assert one.status_code == many.status_code == 200
        a, b = one.json(), many.json()
        assert hits_of(a) == hits_of(b) and a["predicted_categories"] == b["predicted_categories"]
        assert [h["score"] for h in a["hits"]] == pytest.approx([h["score"] for h in b["hits"]], abs=1e-5)


@pytest.fixture(scope="module")
def slow_photo() -> bytes:
    """A 3000 x 3000 noise JPEG (6.8 MB) without a mask: ~0.3 s of decoding and GrabCut here."""
    noise = (np.random.default_rng(0).random((3000, 3000, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_full_queue_answers_503_with_retry_after(built_index, tiny_weights, photos, slow_photo):
    _, photo, mask = photos[0]
    topk = {"topk": "3"}
    service = make_service(built_index, tiny_weights, queue_size=1)
    with running_server(create_app(service)) as base, httpx.Client(base_url=base, timeout=60) as http:
        first = {}
        slow = threading.Thread(target=lambda: first.update(r=http.post(
            "/search", files={"image": ("big.jpg", slow_photo)}, data=topk)))
        slow.start()
        while service.in_flight == 0:  # the slow photo holds the only place while it is decoded
            time.sleep(0.002)
        busy = httpx.post(base + "/search", files={"image": ("q.png", photo), "mask": ("m.png", mask)}, data=topk)
        slow.join()
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert "--queue-size" in busy.json()["error"]
        assert first["r"].status_code == 200
        again = http.post("/search", files={"image": ("q.png", photo), "mask": ("m.png", mask)}, data=topk)
        assert again.status_code == 200  # serving again


def test_slow_request_answers_504_and_the_service_goes_on(built_index, tiny_weights, photos, slow_photo):
    _, photo, mask = photos[0]
    service = make_service(built_index, tiny_weights, timeout_s=0.03)
    with TestClient(create_app(service)) as client:
        response = post(client, slow_photo, name="big.jpg")
        assert response.status_code == 504 and "--timeout" in response.json()["error"]
        time.sleep(1.0)  # its decoding ends, and nobody searches for a request that was answered
        assert service.stats["requests"] == 0
        # A normal photo with a normal limit: 0.03 s is shorter than a first search on a slow CI machine.
        service.config = dataclasses.replace(service.config, timeout_s=60)
        assert post(client, photo, mask).status_code == 200 and service.stats["requests"] == 1


# --------------------------------------------------------------------------- hot reload


def test_hot_reload_during_a_build(index_copy, tiny_weights, tmp_path, monkeypatch):
    """What the service promises while a build commits to the index it serves (README, Serve):

    - every answer is computed from one snapshot of one table version, held in memory (or
      mapped), and `X-Ibsr-Version` names that version: a reload that swaps versions in the
      middle of a batch leaves the batch's answers as its version gives them, and a build's
      compaction deleting the version's files from disk changes no answer;
    - `/health` reports the version that answers the next request, one the service can always
      read: the previous one until a reload has loaded the next one entirely.

    Deterministic, no timing: the build runs in this thread and calls back after each commit
    (`IndexWriter.upsert`); there the test asks, has the service poll the index (what its watcher
    thread does every --reload-interval) from inside a batch, and asks again. Expected answers
    are computed from each version while it exists: the compaction at the end deletes every
    older version here (KEEP_OLD_VERSIONS 0; a real build keeps those under 5 minutes old, the
    old test's flake: the copied index's versions were older than that)."""
    monkeypatch.setenv("IBSR_PRECISION", "float32")  # scores checked against float64's; int8: test_runtime.py
    write_catalog(tmp_path, CATEGORIES, 2 * SHAPES_PER_CATEGORY, seed=3)  # the 9 shapes + 9 new ones
    photo, mask = mesh_photo(tmp_path / "catalog" / "lamp" / "lamp_0004.obj")
    (tmp_path / "q.png").write_bytes(photo)
    service = make_service(index_copy, tiny_weights)  # reload_interval 0: it reloads when the test polls
    expected = {}  # table version -> its top-k shape ids, every shape's score

    def expect_latest() -> int:
        snapshot = IndexSnapshot.open(index_copy)  # the latest version, read while it exists
        scores = float64_scores(tiny_weights, tmp_path / "q.png", snapshot)
        expected[snapshot.version] = ({snapshot.shape_ids[i] for i in np.argsort(-scores)[:N_SHAPES]},
                                      dict(zip(snapshot.shape_ids, scores)))
        return snapshot.version

    def ask(swap_mid_batch=False) -> int:
        """The version that answered, after checking the answer is exactly that version's."""
        if swap_mid_batch:  # the batch has taken its version; a newer one is swapped in before it encodes
            def poll_then_encode(searcher, queries):
                del service._encode
                assert service.poll()
                return service._encode(searcher, queries)
            service._encode = poll_then_encode
        answer = post(client, photo, mask, name="q.png", topk=N_SHAPES, prefilter="none")
        assert answer.status_code == 200, answer.text
        version = int(answer.headers["X-Ibsr-Version"])
        ids, scores = expected[version]
        assert {h["shape_id"] for h in answer.json()["hits"]} == ids, version
        assert all(h["score"] == pytest.approx(scores[h["shape_id"]], abs=2e-3) for h in answer.json()["hits"])
        return version

    def health_version() -> int:
        return client.get("/health").json()["version"]

    commits = []

    def after_commit():
        served, latest = health_version(), expect_latest()
        assert ask() == served < latest  # not reloaded yet: the served version answers
        assert ask(swap_mid_batch=True) == served  # swapped during the batch: it still answers from its own
        assert health_version() == latest == ask()
        commits.append(latest)

    upsert = IndexWriter.upsert
    monkeypatch.setattr(IndexWriter, "upsert", lambda self, rows: (upsert(self, rows), after_commit()))
    monkeypatch.setattr(writer, "KEEP_OLD_VERSIONS", datetime.timedelta(0))
    with TestClient(create_app(service)) as client:
        first = expect_latest()
        assert health_version() == first == ask()
        Indexer(index_copy, weights=tiny_weights, workers=0, batch_size=4).build(tmp_path / "catalog", progress=False)
        assert len(commits) == 3  # 9 new shapes in batches of 4
        served = commits[-1]
        with pytest.raises(ValueError, match="no longer exists"):  # the compaction deleted the served version
            lancedb.connect(str(index_copy)).open_table("shapes").checkout(served)
        assert health_version() == served == ask()  # still answered, from memory
        thumbnail = client.get("/shapes/lamp/lamp_0004/thumbnail.png")  # read from disk: the newest version's
        assert thumbnail.status_code == 200
        assert thumbnail.headers["X-Ibsr-Version"] == str(ShapeReader(index_copy).version)
        assert service.poll() and not service.poll()  # the compacted version (nothing newer after it)
        final = expect_latest()
        assert health_version() == final == ask() and client.get("/health").json()["shapes"] == 2 * N_SHAPES
    assert expected[first][0] != expected[final][0]  # the new shapes changed the answer
    assert service.stats["reload_error"] is None


def test_the_watcher_reloads_a_commit_by_itself(index_copy, tiny_weights):
    service = make_service(index_copy, tiny_weights, reload_interval_s=0.05)
    with TestClient(create_app(service)) as client:
        before = client.get("/health").json()
        IndexWriter(index_copy, IndexMeta.read(index_copy)).delete(["chair/chair_0000"])  # a commit
        deadline = time.monotonic() + 60  # waits for the watcher's poll; nothing else is happening
        while client.get("/health").json()["shapes"] != N_SHAPES - 1:
            assert time.monotonic() < deadline, "the watcher did not reload within 60 s"
            time.sleep(0.05)
        after = client.get("/health").json()
    assert after["version"] > before["version"] and after["reloads"] == 1


def test_a_reload_maps_its_own_files_and_the_old_version_goes_with_its_last_user(index_copy, tiny_weights):
    """Hot reload without a second copy: each version maps the sidecar it was loaded from
    (read-only, so its pages stay shared page cache), and the old one is freed as soon as
    nothing uses it (by reference counting, not at some later garbage collection)."""
    from index_helpers import rewrite_derived

    service = make_service(index_copy, tiny_weights)
    in_use = service.served  # what a batch holds while it runs (`_work` passes it to `_run_batch`)
    old = weakref.ref(in_use.searcher)
    assert service.reload()  # the same files: mapped again, so both versions share their pages
    same = service.served.searcher.shapes.views
    assert same.filename == in_use.searcher.shapes.views.filename and not same.flags.writeable
    rewrite_derived(index_copy, flat=True)  # new files (and the old ones unlinked, still mapped by their users)
    assert service.reload()
    fresh = service.served.searcher.shapes.views
    assert isinstance(fresh, np.memmap) and fresh.filename != same.filename and not fresh.flags.writeable
    assert old() is not None  # the batch still answers from its version
    del in_use, same
    assert old() is None


# --------------------------------------------------------------------------- on a network

KEY = "s3cret-key"


def test_answers_show_paths_relative_to_the_catalog_root(client, catalog, photos):
    _, photo, mask = photos[0]
    body = post(client, photo, mask, topk=N_SHAPES, prefilter="none").json()
    assert {h["source_path"] for h in body["hits"]} == {
        p.relative_to(catalog).as_posix() for c in CATEGORIES for p in (catalog / c).iterdir()}
    assert str(catalog) not in json.dumps(client.get("/health").json())


def test_catalog_relative_never_shows_a_folder_outside_the_root():
    assert catalog_relative("/srv/cat/chair/a/model.obj", "/srv/cat") == "chair/a/model.obj"
    assert catalog_relative("cat/chair/a.obj", "cat") == "chair/a.obj"  # built with a relative catalog path
    assert catalog_relative("a.obj", ".") == "a.obj"  # a manifest in the build's folder
    for outside, root in (("/home/me/meshes/a.obj", "/srv/cat"), ("/srv/cat/../secret/a.obj", "/srv/cat"),
                          ("/srv/catalog2/a.obj", "/srv/cat"), ("../up/a.obj", "."), ("/srv/cat/a.obj", "cat"),
                          ("/srv/cat/a.obj", "")):  # "": an index written before roots were recorded
        assert catalog_relative(outside, root) == "a.obj", (outside, root)


def test_an_index_without_a_catalog_root_answers_file_names_only(index_copy, tiny_weights, photos):
    meta_file = index_copy / META_FILE
    meta = json.loads(meta_file.read_text())
    assert meta.pop("catalog_root")  # recorded by the build
    meta_file.write_text(json.dumps(meta))  # as an index of an earlier ibsr
    _, photo, mask = photos[0]
    with TestClient(create_app(make_service(index_copy, tiny_weights))) as old:
        hits = post(old, photo, mask).json()["hits"]
    assert hits and [h["source_path"] for h in hits] == [h["shape_id"].split("/")[1] + ".obj" for h in hits]


def test_mesh_errors_name_the_shape_not_the_server_path(tmp_path, catalog, tiny_weights):
    small = tmp_path / "catalog" / "chair"
    small.mkdir(parents=True)
    mesh = sorted((catalog / "chair").iterdir())[0]
    shutil.copy(mesh, small / mesh.name)
    Indexer(tmp_path / "index", weights=tiny_weights, workers=0).build(tmp_path / "catalog", progress=False)
    (small / mesh.name).unlink()
    with TestClient(create_app(make_service(tmp_path / "index", tiny_weights))) as client:
        gone = client.get(f"/shapes/chair/{mesh.stem}/mesh.glb")
    assert gone.status_code == 404 and f"shape 'chair/{mesh.stem}'" in gone.json()["error"]
    assert str(tmp_path) not in gone.text


@pytest.fixture(scope="module")
def keyed(built_index, tiny_weights):
    service = make_service(built_index, tiny_weights, api_key=KEY, cors_origins=("https://ok.example",))
    with TestClient(create_app(service)) as test_client:
        yield test_client


def test_api_key_is_required_by_every_endpoint_but_the_page_files(keyed, photos, monkeypatch):
    _, photo, mask = photos[0]
    endpoints = ["/health", "/rig", "/openapi.json", "/shapes/table/table_0001/thumbnail.png",
                 "/shapes/table/table_0001/mesh.glb", "/docs", "/nowhere"]
    wrong = [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "wrong"}, {"Authorization": KEY},
             {"Authorization": f"Basic {KEY}"}, {"X-Api-Key": KEY[:-1]}, {"X-Api-Key": KEY + "x"}]
    for headers in wrong:
        for path in endpoints:
            refused = keyed.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert "API key" in refused.json()["error"] and refused.headers["WWW-Authenticate"] == "Bearer"
        refused = keyed.post("/search", headers=headers, files={"image": ("q.png", photo)}, data={"topk": "3"})
        assert refused.status_code == 401, headers
    assert keyed.get("/health", headers={"Authorization": f"Bearer {KEY}"}).json()["requests"] == 0
    compared = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real_compare(a, b))
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-Api-Key": KEY}):
        for path in endpoints[:5]:
            assert keyed.get(path, headers=headers).status_code == 200, (path, headers)
        answer = keyed.post("/search", headers=headers, files={"image": ("q.png", photo), "mask": ("m.png", mask)},
                            data={"topk": "3"})
        assert answer.status_code == 200 and len(answer.json()["hits"]) == 3
    assert compared and all(b == KEY.encode() for _, b in compared)  # constant time, always
    for page_file in ("/", "/static/app.js", "/static/style.css", "/static/vendor/three/three.module.js"):
        assert keyed.get(page_file).status_code == 200, page_file  # the package's own files, nothing indexed
    assert keyed.post("/", files={"image": ("q.png", photo)}).status_code == 401  # exempt: GET only


def test_cors_is_closed_by_default_and_open_to_configured_origins(client, keyed):
    origin = {"Origin": "https://ok.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    closed = client.get("/health", headers=origin)
    assert closed.status_code == 200 and not any(h.startswith("access-control-") for h in closed.headers)
    assert not any(h.startswith("access-control-") for h in client.options("/search", headers=preflight).headers)

    auth = {"Authorization": f"Bearer {KEY}"}
    opened = keyed.get("/health", headers={**origin, **auth})
    assert opened.status_code == 200 and opened.headers["access-control-allow-origin"] == "https://ok.example"
    assert "x-ibsr-version" in opened.headers["access-control-expose-headers"].lower()
    answered = keyed.options("/search", headers=preflight)  # a browser's preflight never carries the key
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == "https://ok.example"
    assert "authorization" in answered.headers["access-control-allow-headers"].lower()
    refused = keyed.get("/health", headers=origin)  # the page of that origin can read why
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://ok.example"
    other = keyed.get("/health", headers={"Origin": "https://evil.example", **auth})
    assert "access-control-allow-origin" not in other.headers


def serve_args(index, weights, *extra) -> list[str]:
    return ["--index", str(index), "--weights", str(weights), *extra]


@pytest.fixture
def started(monkeypatch) -> list[dict]:
    """Each `uvicorn.run` the command would make (app, host, port), instead of serving."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    monkeypatch.delenv("IBSR_API_KEY", raising=False)
    return calls


def test_ibsr_serve_refuses_a_network_host_without_a_key(tmp_path, started):
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):  # a name may resolve to anything
        refused = CliRunner().invoke(serve_cli.main, ["--index", str(tmp_path / "nowhere"), "--host", host])
        assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
        assert refused.output.count("\n") == 1 and refused.output.startswith("error: --host ")
        assert "--api-key" in refused.output and "--insecure" in refused.output
    assert not started and not (tmp_path / "nowhere").exists()  # refused before loading anything
    for bad in (["--api-key", "two words"], ["--cors-origin", "https://ok.example/"], ["--cors-origin", "ok.example"]):
        result = CliRunner().invoke(serve_cli.main, ["--index", str(tmp_path / "nowhere"), *bad])
        assert result.exit_code == 1 and result.output.startswith("error: --") and "Traceback" not in result.output


def test_ibsr_serve_on_a_network_host_with_a_key_or_insecure(built_index, tiny_weights, started):
    for args, env in ((["--host", "0.0.0.0", "--insecure"], {}), (["--host", "127.0.0.1"], {}),
                      (["--host", "localhost"], {}), (["--host", "::1"], {}),
                      (["--host", "0.0.0.0", "--api-key", KEY], {}), (["--host", "0.0.0.0"], {"IBSR_API_KEY": KEY})):
        result = CliRunner().invoke(serve_cli.main, serve_args(built_index, tiny_weights, *args), env=env)
        assert result.exit_code == 0, (args, result.output)
        assert started[-1]["host"] == args[1] and KEY not in result.output
    open_app, keyed_app = started[0]["app"], started[-1]["app"]
    with TestClient(open_app) as open_client, TestClient(keyed_app) as keyed_client:
        assert open_client.get("/health").status_code == 200  # --insecure: no key asked
        assert keyed_client.get("/health").status_code == 401
        assert keyed_client.get("/health", headers={"X-Api-Key": KEY}).status_code == 200
    result = CliRunner().invoke(serve_cli.main, serve_args(built_index, tiny_weights, "--cors-origin",
                                                           "https://ok.example", "--cors-origin", "http://b:8080"))
    assert result.exit_code == 0 and started[-1]["app"].state.service.config.cors_origins == (
        "https://ok.example", "http://b:8080")


def test_limits_are_documented(readme=Path(__file__).parent.parent / "README.md"):
    help_text = " ".join(CliRunner().invoke(serve_cli.main, ["--help"]).output.split())
    for limit in ("--max-upload-mb (20 MB)", f"{MAX_PIXELS:,} pixels", "--queue-size (64)", "--timeout (30 s)"):
        assert limit in help_text, limit
    assert "## Running the service on a network" in readme.read_text()


# --------------------------------------------------------------------------- the command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ibsr_serve_command_serves_and_reports_errors(built_index, tiny_weights, tmp_path, photos):
    missing = CliRunner().invoke(serve_cli.main, ["--index", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and missing.output.startswith("error: ") and "Traceback" not in missing.output
    assert "--max-batch" in CliRunner().invoke(serve_cli.main, ["--help"]).output
    port = free_port()
    command = [sys.executable, "-m", "ibsr.cli.serve", "--index", str(built_index), "--weights", str(tiny_weights),
               "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "ibsr-serve did not come up"
            time.sleep(0.1)
        _, photo, mask = photos[2]
        answer = httpx.post(f"http://127.0.0.1:{port}/search", data={"topk": "4"}, timeout=60,
                            files={"image": ("q.png", photo), "mask": ("m.png", mask)})
        assert answer.status_code == 200 and len(answer.json()["hits"]) == 4
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert f"({N_SHAPES} shapes" in stderr
