"""Precision by CPU (ibsr.precision, issue 12): the override, the choice per component, and the
bf16 query encoder against float32 on the shipped default model with generated photos, within
the documented tolerance (ibsr/precision.py). Precision is the torch runtime's: these tests run
with IBSR_RUNTIME=torch (ONNX Runtime, float32 and the int8 mask network: tests/test_runtime.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibsr import precision
from ibsr.errors import IbsrError
from ibsr.geometry.mesh import normalize_mesh
from ibsr.geometry.render import render_views
from ibsr.kernels import attention_scores
from ibsr.model import inference, load_default_model, scale_pixels
from ibsr.photos.query import Query, query_tensor
from ibsr.synth import FURNITURE, catalog_shape, render_query_photo

# The documented tolerance of the bf16 query encoder against float32 (ibsr/precision.py). Measured
# by benchmarks/encoders.py on 24 photos of 24 furniture shapes: cosine >= 0.9956, scores within
# 0.029, top-5 overlap 0.98, top-1 unchanged for all 24 (benchmarks/RESULTS.md).
MIN_QUERY_COSINE = 0.99
MAX_SCORE_DIFF = 0.05
MIN_TOP5_OVERLAP = 0.9


@pytest.fixture(autouse=True)
def torch_runtime(monkeypatch):
    monkeypatch.setenv("IBSR_RUNTIME", "torch")


def test_override_and_choice_per_component(monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, "float32")
    assert {precision.precision(c) for c in precision.COMPONENTS} == {"float32"}
    assert precision.rerank_dtype() is None
    monkeypatch.setenv(precision.PRECISION_ENV, "bf16")
    assert {c: precision.precision(c) for c in precision.COMPONENTS} == {
        "queries": "bf16", "views": "bf16", "rerank": "bf16", "mask": "float32"}  # no bf16 mask path
    assert precision.rerank_dtype() == torch.bfloat16
    monkeypatch.setenv(precision.PRECISION_ENV, "int8")  # the mask network and the query encoder, on a CPU
    assert {c: precision.precision(c) for c in precision.COMPONENTS} == {
        "queries": "int8", "views": "float32", "rerank": "float32", "mask": "int8"}
    assert precision.precision("mask", "cuda") == "float32"
    assert precision.rerank_dtype() is None
    monkeypatch.setenv(precision.PRECISION_ENV, "auto")
    monkeypatch.setattr(precision, "cpu_has_int8_dot", lambda: False)  # int8 dot products: below
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # AVX512-BF16 or AMX
    assert precision.precision("queries") == "bf16"
    assert precision.precision("views") == precision.precision("rerank") == "float32"  # measured: see RESULTS.md
    assert precision.precision("queries", "cuda") == "float32"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)  # e.g. an AVX2-only EPYC
    assert precision.precision("queries") == "float32"
    monkeypatch.setattr(precision, "cpu_has_int8_dot", lambda: True)  # AVX512-VNNI, AVX-VNNI or AMX
    assert precision.precision("mask") == precision.precision("queries") == "int8"
    assert precision.precision("mask", "cuda") == precision.precision("queries", "cuda") == "float32"
    assert {precision.precision(c) for c in ("views", "rerank")} == {"float32"}
    assert precision.torch_precision("queries") == precision.torch_precision("mask") == "float32"  # torch: no int8
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # a Zen 4: VNNI and BF16
    assert precision.precision("queries") == "int8" and precision.torch_precision("queries") == "bf16"
    assert precision.torch_precision("mask") == "float32"  # the mask network has no bf16 path
    monkeypatch.setenv(precision.PRECISION_ENV, "int8")
    assert precision.torch_precision("queries") == "float32"  # asked for int8: torch runs the reference
    monkeypatch.setenv(precision.PRECISION_ENV, "auto")
    monkeypatch.setattr(precision, "cpu_has_int8_dot", lambda: False)  # e.g. a Zen 3
    assert precision.precision("mask") == "float32" and precision.precision("queries") == "bf16"
    monkeypatch.setenv(precision.PRECISION_ENV, "fp8")
    with pytest.raises(IbsrError, match="IBSR_PRECISION"):
        precision.precision("queries")


@pytest.fixture(scope="module")
def photos_and_views():
    model = load_default_model()
    c = model.config
    shapes = [catalog_shape(cat, i, 77) for cat in FURNITURE for i in range(2)]
    rng = np.random.default_rng(77)
    queries = [Query(f"p{i}", *render_query_photo(s, rng), "file") for i, s in enumerate(shapes[::2])]
    photos = torch.from_numpy(np.stack([query_tensor(q, c.query_size) for q in queries]))
    views = np.stack([render_views(normalize_mesh(s.mesh), c.render_size) for s in shapes])
    views = scale_pixels(torch.from_numpy(views)).unsqueeze(2)
    return model, photos, views


def embed(model, photos, views, mode, monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, mode)
    q = inference.embed_queries(model, photos)
    return q, model.attend(q).float(), inference.embed_views(model, views)


def test_bf16_query_encoder_agrees_with_float32(photos_and_views, monkeypatch):
    model, photos, views = photos_and_views
    q32, wq32, v32 = embed(model, photos, views, "float32", monkeypatch)
    q16, wq16, _ = embed(model, photos, views[:1], "bf16", monkeypatch)
    assert q16.dtype == torch.float32
    torch.testing.assert_close(q16.norm(dim=-1), torch.ones(len(q16)), atol=1e-5, rtol=0)  # re-normalized
    q_cos = (q16 * q32).sum(-1)
    assert q_cos.min() >= MIN_QUERY_COSINE, q_cos
    s32 = attention_scores(q32, wq32, v32.half())  # against the float32 index, float16 as stored
    s16 = attention_scores(q16, wq16, v32.half())
    assert (s16 - s32).abs().max() <= MAX_SCORE_DIFF, (s16 - s32).abs().max()
    top32, top16 = s32.topk(5, dim=1).indices.tolist(), s16.topk(5, dim=1).indices.tolist()
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top32, top16)])
    assert overlap >= MIN_TOP5_OVERLAP, overlap
    assert not torch.equal(q16, q32)  # bf16 really ran


def test_auto_uses_bf16_only_for_queries_and_only_where_the_cpu_has_it(photos_and_views, monkeypatch):
    model, photos, views = photos_and_views
    auto = embed(model, photos[:2], views[:1], "auto", monkeypatch)
    queries = embed(model, photos[:2], views[:1], "bf16" if precision.cpu_has_bf16() else "float32", monkeypatch)
    float32 = embed(model, photos[:2], views[:1], "float32", monkeypatch)
    assert torch.equal(auto[0], queries[0]) and torch.equal(auto[1], queries[1])
    assert torch.equal(auto[2], float32[2])  # index builds: float32 on every CPU
