"""The CPU runtime (`ibsr.runtime`): ONNX Runtime against torch float32, the choice and its
fallbacks, and the cache of exported files."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from ibsr import runtime
from ibsr.errors import IbsrError
from ibsr.model import inference, init_model, load_checkpoint, load_default_model, scale_pixels
from ibsr.runtime import onnx_backend

pytest.importorskip("onnxruntime")

MIN_COSINE = 0.999


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture
def float32(monkeypatch):
    monkeypatch.setenv("IBSR_PRECISION", "float32")  # the torch reference, whatever the CPU


def random_inputs(config, photos=3, shapes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(photos, 4, config.query_size, config.query_size, generator=g) * 2 - 1
    v = torch.rand(shapes, config.views, 1, config.render_size, config.render_size, generator=g) * 2 - 1
    return x, v


def assert_agree(model, x, v):
    q_onnx, v_onnx = inference.embed_queries(model, x, runtime="onnx"), inference.embed_views(model, v, runtime="onnx")
    q_ref, v_ref = inference.embed_queries(model, x, runtime="torch"), inference.embed_views(model, v, runtime="torch")
    assert q_onnx.dtype == v_onnx.dtype == torch.float32 and v_onnx.shape == v_ref.shape
    assert (q_onnx * q_ref).sum(-1).min() >= MIN_COSINE
    assert (v_onnx * v_ref).sum(-1).min() >= MIN_COSINE
    assert not torch.equal(q_onnx, q_ref)  # ONNX Runtime really ran


def test_onnx_matches_torch_on_the_tiny_model(tiny_weights, cache, float32):
    model = load_checkpoint(tiny_weights)
    assert_agree(model, *random_inputs(model.config))
    assert {p.name.split("-")[0] for p in cache.iterdir()} == {"queries", "views"}


def test_onnx_matches_torch_on_the_shipped_model(float32):
    """Generated photos and their shapes' views; the suite's cache (exports take ~20 s once)."""
    from ibsr.geometry.mesh import normalize_mesh
    from ibsr.geometry.render import render_views
    from ibsr.photos.query import Query, query_tensor
    from ibsr.synth import catalog_shape, render_query_photo

    model = load_default_model()
    c = model.config
    shapes = [catalog_shape(cat, 0, 5) for cat in ("chair", "table")]
    rng = np.random.default_rng(5)
    photos = np.stack([query_tensor(Query(f"p{i}", *render_query_photo(s, rng), "file"), c.query_size)
                       for i, s in enumerate(shapes)])
    views = np.stack([render_views(normalize_mesh(s.mesh), c.render_size) for s in shapes])
    views = scale_pixels(torch.from_numpy(views)).unsqueeze(2)
    assert_agree(model, torch.from_numpy(photos), views)


def test_the_mask_network_runs_in_onnx(cache, float32):
    from ibsr.model.segmenter import MaskConfig, init_mask_net
    from ibsr.photos.mask_model import mask_probability

    net = init_mask_net(MaskConfig(size=64), imagenet=False).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    p_onnx, p_torch = mask_probability(net, rgb, runtime="onnx"), mask_probability(net, rgb, runtime="torch")
    assert p_onnx.shape == (50, 70) and np.abs(p_onnx - p_torch).max() < 1e-3
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["mask"]


def test_torch_when_asked(tiny_weights, cache, monkeypatch):
    model = load_checkpoint(tiny_weights)
    x, v = random_inputs(model.config)
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    q = inference.embed_queries(model, x)
    assert torch.equal(q, inference.embed_queries(model, x, runtime="torch"))
    assert not cache.exists()  # nothing exported
    assert runtime.choose("queries") == "torch" and runtime.choose("views", "auto", "cuda") == "torch"
    monkeypatch.setenv(runtime.RUNTIME_ENV, "tensorrt")
    with pytest.raises(IbsrError, match="IBSR_RUNTIME"):
        inference.embed_queries(model, x)


def test_auto_falls_back_to_torch_without_onnxruntime(cache, monkeypatch, capsys, float32):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.setattr(runtime, "auto_prefers_onnx", lambda component: True)  # whatever this CPU is
    model = init_model(load_checkpoint_config())
    x, _ = random_inputs(model.config)
    q = inference.embed_queries(model, x, runtime="auto")
    assert torch.equal(q, inference.embed_queries(model, x, runtime="torch"))
    inference.embed_queries(model, x, runtime="auto")
    err = capsys.readouterr().err
    assert err.count("onnxruntime is not installed") == 1 and len(err.strip().splitlines()) == 1  # once, one line
    with pytest.raises(IbsrError, match="onnxruntime is not installed"):
        inference.embed_queries(model, x, runtime="onnx")


def test_auto_falls_back_to_torch_when_export_fails(cache, monkeypatch, capsys, float32):
    def broken(*args):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(onnx_backend, "export_bytes", broken)
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.setattr(runtime, "auto_prefers_onnx", lambda component: True)
    model = init_model(load_checkpoint_config(), seed=3)
    _, v = random_inputs(model.config)
    assert torch.equal(inference.embed_views(model, v, runtime="auto"), inference.embed_views(model, v, runtime="torch"))
    assert "ONNX export of the views network failed (unsupported operator); using torch" in capsys.readouterr().err
    with pytest.raises(IbsrError, match="export of the views network failed"):
        inference.embed_views(model, v, runtime="onnx")


def test_the_cache_is_reused_and_a_corrupt_file_is_replaced(cache, monkeypatch):
    model = init_model(load_checkpoint_config(), seed=4)
    module, shape = model.query_encoder, (4, model.config.query_size, model.config.query_size)
    x = onnx_backend.probe_input(shape)
    first = onnx_backend.load(module, "queries", shape)(x)
    [path] = cache.iterdir()
    good = path.read_bytes()
    real_export, other = onnx_backend.export_bytes, other_model_file(shape)
    monkeypatch.setattr(onnx_backend, "export_bytes", lambda *a: pytest.fail("exported again"))
    assert torch.equal(onnx_backend.load(module, "queries", shape)(x), first)  # from the file
    exports = []
    monkeypatch.setattr(onnx_backend, "export_bytes", lambda *a: exports.append(1) or real_export(*a))
    for damage in (good[:len(good) // 2], b"not a model", other):
        path.write_bytes(damage)
        assert torch.equal(onnx_backend.load(module, "queries", shape)(x), first)
        assert path.read_bytes() != damage and onnx_backend.load(module, "queries", shape)  # replaced, loads
    assert len(exports) == 3
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp files left


def test_changed_weights_are_exported_again(cache, float32):
    model = init_model(load_checkpoint_config(), seed=5)
    x, _ = random_inputs(model.config)
    before = inference.embed_queries(model, x, runtime="onnx")
    with torch.no_grad():
        model.query_encoder.backbone.fc[1].weight.mul_(-1)  # in place, as an optimizer step
    after = inference.embed_queries(model, x, runtime="onnx")
    assert (after * inference.embed_queries(model, x, runtime="torch")).sum(-1).min() >= MIN_COSINE
    assert not torch.allclose(before, after) and len(list(cache.iterdir())) == 2
    layer = model.query_encoder.backbone.fc[1]
    layer.weight = torch.nn.Parameter(layer.weight.detach() * 0.5)  # replaced, not changed in place
    replaced = inference.embed_queries(model, x, runtime="onnx")
    assert (replaced * inference.embed_queries(model, x, runtime="torch")).sum(-1).min() >= MIN_COSINE
    assert len(list(cache.iterdir())) == 3


def load_checkpoint_config():
    from conftest import TINY
    from ibsr.model import ModelConfig

    return ModelConfig(**TINY)


def other_model_file(shape) -> bytes:
    """A valid ONNX file of another network with the same input: loads, but is wrong here."""
    other = init_model(load_checkpoint_config(), seed=99).query_encoder
    return onnx_backend.export_bytes(other, shape, "another network")


def test_a_person_at_a_terminal_is_told_about_the_first_export(cache, float32, monkeypatch, capsys):
    model = init_model(load_checkpoint_config(), seed=7)
    x, _ = random_inputs(model.config)
    inference.embed_queries(model, x, runtime="onnx")  # stderr is no terminal here: nothing said
    assert capsys.readouterr().err == ""

    class Terminal:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    other = init_model(load_checkpoint_config(), seed=8)  # other weights: exported afresh
    inference.embed_queries(other, x, runtime="onnx")
    inference.embed_queries(other, x, runtime="onnx")  # loaded: nothing more
    lines = terminal.text.strip().splitlines()
    assert len(lines) == 1 and "preparing the query encoder" in lines[0] and str(cache) in lines[0]


def test_the_auto_rule(monkeypatch):
    import platform

    monkeypatch.setenv(runtime.RUNTIME_ENV, "auto")
    monkeypatch.setenv("IBSR_PRECISION", "auto")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert {runtime.choose(c) for c in runtime.COMPONENTS} == {"onnx"}  # measured faster there
    assert runtime.choose("queries", device_type="cuda") == "torch"
    monkeypatch.setenv("IBSR_PRECISION", "bf16")
    assert runtime.choose("queries") == "torch"  # bf16 exists only in torch
    monkeypatch.setenv("IBSR_PRECISION", "float32")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert runtime.choose("views") == "torch"  # not measured there
    assert runtime.choose("views", "onnx") == "onnx"


def test_describe_says_what_runs_each_network(monkeypatch):
    import platform

    from ibsr import precision

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "cpu_has_int8_dot", lambda: True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv(runtime.RUNTIME_ENV, "auto")
    monkeypatch.setenv("IBSR_PRECISION", "auto")
    assert [runtime.describe(c) for c in ("queries", "views", "mask")] == ["onnx int8", "onnx float32", "onnx int8"]
    assert runtime.describe("queries", device_type="cuda") == "torch float32"
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    assert [runtime.describe(c) for c in ("queries", "mask")] == ["torch bf16", "torch float32"]  # no int8 in torch
    monkeypatch.setenv(runtime.RUNTIME_ENV, "auto")
    monkeypatch.setattr(precision, "cpu_has_int8_dot", lambda: False)
    assert [runtime.describe(c) for c in ("queries", "mask")] == ["onnx float32", "onnx float32"]
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    assert [runtime.describe(c) for c in ("queries", "mask")] == ["torch bf16", "torch float32"]
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    assert [runtime.describe(c) for c in ("queries", "mask")] == ["torch float32", "torch float32"]  # int8: ONNX only


def test_an_empty_batch_exports_nothing(tiny_weights, cache):
    model = load_checkpoint(tiny_weights)
    x, _ = random_inputs(model.config, photos=0)
    assert inference.embed_queries(model, x, runtime="onnx").shape == (0, model.config.embed_dim)  # as torch does
    assert not cache.exists()


def test_a_forked_child_loads_its_own_session(tiny_weights, cache, float32):
    import os
    import pickle

    model = load_checkpoint(tiny_weights)
    x, _ = random_inputs(model.config)
    parent = inference.embed_queries(model, x, runtime="onnx")
    assert model.query_encoder in runtime._loaded
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the same module object, no session; it loads one from the cache
        try:
            result = (model.query_encoder in runtime._loaded, inference.embed_queries(model, x, runtime="onnx"))
            os.write(write, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        loaded, q = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert not loaded and torch.equal(q, parent)


def test_the_mask_network_in_int8(cache, monkeypatch):
    """IBSR_PRECISION=int8: a separate, quantized cache file whose mask agrees with float32's."""
    import onnx

    from ibsr.model.segmenter import MaskConfig, init_mask_net
    from ibsr.photos.mask_model import mask_probability

    net = init_mask_net(MaskConfig(size=64), imagenet=True).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    monkeypatch.setenv("IBSR_PRECISION", "float32")
    p_float = mask_probability(net, rgb, runtime="onnx")
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    p_int8 = mask_probability(net, rgb, runtime="onnx")
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(f"-int8q{runtime.quantize.VERSION}.onnx")
    monkeypatch.setattr(runtime.quantize, "int8_bytes", None)  # from here on, the cached file serves
    assert np.array_equal(mask_probability(net, rgb, runtime="onnx"), p_int8)
    ops = {node.op_type for node in onnx.load(cache / files[0]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized
    assert 0 < np.abs(p_int8 - p_float).max() < 0.1
    assert ((p_int8 >= 0.5) == (p_float >= 0.5)).mean() > 0.95
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")  # int8 exists only in ONNX Runtime
    assert np.array_equal(mask_probability(net, rgb), mask_probability(net, rgb, runtime="torch"))


def test_the_query_encoder_in_int8(monkeypatch):
    """IBSR_PRECISION=int8: the shipped query encoder from its own int8 file, its first
    convolutions and head in float32, its embeddings of generated photos close to float32's;
    float32 wherever no calibration is given or torch runs it. The suite's cache (made once)."""
    import onnx

    from ibsr.photos.query import Query, calibration_inputs, query_tensor
    from ibsr.synth import catalog_shape, render_query_photo

    model = load_default_model()
    size = model.config.query_size
    rng = np.random.default_rng(11)
    x = torch.from_numpy(np.stack([query_tensor(Query(f"p{i}", *render_query_photo(catalog_shape(cat, i, 11), rng),
                                                      "file"), size)
                                   for i, cat in enumerate(("chair", "table", "sofa", "lamp", "bed", "chair"))]))

    def embed(**kwargs):
        return inference.embed_queries(model, x, calibration=lambda: calibration_inputs(size), **kwargs)

    monkeypatch.setenv("IBSR_PRECISION", "float32")
    q_float = embed(runtime="onnx")
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    q_int8 = embed(runtime="onnx")
    assert 0.99 <= (q_int8 * q_float).sum(-1).min() < 0.99999  # measured 0.994 min, 0.9985 mean on 480 photos
    assert torch.equal(inference.embed_queries(model, x, runtime="onnx"), q_float)  # no calibration: float32
    loads = []
    monkeypatch.setattr(runtime, "_load", lambda *args: loads.append(args) or pytest.fail("loaded again"))
    assert torch.equal(embed(runtime="onnx"), q_int8)  # the int8 and float32 sessions are both kept
    assert torch.equal(inference.embed_queries(model, x, runtime="onnx"), q_float) and not loads
    monkeypatch.undo()
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    assert torch.equal(embed(runtime="torch"), inference.embed_queries(model, x, runtime="torch"))

    path = onnx_backend.cache_path(model.query_encoder, "queries", tuple(x.shape[1:]), int8=True)
    nodes = onnx.load(path).graph.node
    made_by = {out: node.op_type for node in nodes for out in node.output}
    quantized = [made_by.get(node.input[1]) == "DequantizeLinear" for node in nodes if node.op_type in ("Conv", "Gemm")]
    kept = 5  # the first five convolutions stay float32 (README, benchmarks/RESULTS.md)
    assert quantized == [False] * kept + [True] * (len(quantized) - kept - 1) + [False]  # the last: the head's Gemm


def test_the_packaged_calibration_photos_are_the_scripts_photos():
    """ibsr/runtime/calibration_photos.npz holds what scripts/calibration_photos.py renders (JPEG aside)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "calibration_photos.py"
    spec = importlib.util.spec_from_file_location("calibration_photos", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    packaged = runtime.quantize.calibration_photos()
    photos, masks = [rgb for rgb, _ in packaged], [mask for _, mask in packaged]
    assert len(photos) == script.PHOTOS and {p.shape for p in photos} == {(script.SIZE, script.SIZE, 3)}
    assert {m.shape for m in masks} == {(script.SIZE, script.SIZE)} and {m.dtype for m in masks} == {np.dtype(bool)}
    import cv2

    def small(rgb):  # 32 x 32 means: JPEG's error on the photos' sensor noise averages out
        return cv2.resize(rgb.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)

    for i in (0, 1, script.PHOTOS - 1):
        rgb, mask = script.calibration_photo(i)
        rendered = small(rgb)
        assert np.abs(small(photos[i]) - rendered).mean() < 2  # measured 0.41-0.47
        assert np.abs(small(photos[(i + 1) % script.PHOTOS]) - rendered).mean() > 20  # another photo: 61-74
        assert np.array_equal(masks[i], mask) and 0.01 < mask.mean() < 0.99  # PNG is lossless


def test_a_failed_int8_export_falls_back_to_float32_onnx(cache, monkeypatch, capsys):
    from ibsr.model.segmenter import MaskConfig, init_mask_net
    from ibsr.photos.mask_model import mask_probability

    def broken(model, inputs, float32_convs=0):
        raise RuntimeError("no quantizer here")

    net = init_mask_net(MaskConfig(size=64), imagenet=False).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    monkeypatch.setattr(runtime.quantize, "int8_bytes", broken)
    monkeypatch.setenv("IBSR_PRECISION", "int8")
    p = mask_probability(net, rgb, runtime="onnx")  # explicit onnx: still no error, int8 is optional
    assert "int8 ONNX export of the mask network failed (no quantizer here)" in capsys.readouterr().err
    assert [f.name.endswith(f"-v{onnx_backend.EXPORT_VERSION}.onnx") for f in cache.iterdir()] == [True]  # float32 only
    monkeypatch.setenv("IBSR_PRECISION", "float32")
    assert np.array_equal(p, mask_probability(net, rgb, runtime="onnx"))
