"""ibsr.model: config, CMIC forward and scoring, checkpoints, color transfer."""

import hashlib
import pickle

import numpy as np
import pytest
import torch

from ibsr.errors import IbsrError
from ibsr.model import (
    CMIC,
    PAPER,
    SMALL,
    ModelConfig,
    checkpoint_id,
    color_transfer,
    default_weights_path,
    init_model,
    lab_to_rgb,
    load_checkpoint,
    load_default_model,
    rgb_to_lab,
    save_checkpoint,
)
from ibsr.model import checkpoint as checkpoint_module
from ibsr.model.color_transfer import masked_mean_std

TINY = ModelConfig(query_arch="resnet18", render_arch="resnet18", width=8, embed_dim=16, query_size=32, render_size=32, views=3)


@pytest.fixture(scope="module")
def tiny_model():
    return init_model(TINY, seed=0)


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_presets():
    for config in (PAPER, SMALL, TINY):
        assert ModelConfig.from_dict(config.to_dict()) == config
    assert PAPER.query_arch == "resnet50" and PAPER.render_arch == "resnet18"
    assert (PAPER.width, PAPER.embed_dim, PAPER.query_size, PAPER.render_size, PAPER.views) == (64, 128, 224, 224, 12)
    assert ModelConfig.from_dict({"width": 16}) == ModelConfig(width=16)


@pytest.mark.parametrize(
    "bad",
    [{"colour": 1}, {"query_arch": "vgg16"}, {"render_arch": "resnet101"}, {"width": 0}, {"views": "12"}, {"embed_dim": True}],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(IbsrError):
        ModelConfig.from_dict(bad)


def test_config_is_frozen():
    with pytest.raises(Exception):
        PAPER.width = 32


# --------------------------------------------------------------------------- CMIC


def test_cmic_state_dict_names(tiny_model):
    keys = set(tiny_model.state_dict())
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"query_encoder", "rendering_encoder", "attention"}
    assert {k for k in keys if k.startswith("attention.")} == {"attention.linear_in.weight", "attention.linear_out.weight"}
    assert all(k.startswith(("query_encoder.resnet.", "rendering_encoder.resnet.")) for k in keys if not k.startswith("attention."))
    assert tiny_model.state_dict()["attention.linear_out.weight"].shape == (16, 32)
    assert tiny_model.state_dict()["query_encoder.resnet.conv1.weight"].shape == (8, 4, 7, 7)
    assert tiny_model.state_dict()["rendering_encoder.resnet.conv1.weight"].shape == (8, 1, 7, 7)


def test_paper_model_key_counts():
    # The authors' checkpoint: 271 query keys, 106 rendering keys, 2 attention keys
    # (no num_batches_tracked on their side).
    keys = [k for k in CMIC(PAPER).state_dict() if not k.endswith("num_batches_tracked")]
    assert sum(k.startswith("query_encoder.resnet.") for k in keys) == 271
    assert sum(k.startswith("rendering_encoder.resnet.") for k in keys) == 106
    assert len(keys) == 379


def _numpy_scores(q, views, w):
    q, views, w = (np.asarray(t, dtype=np.float64) for t in (q, views, w))
    out = np.zeros((len(q), len(views)))
    for b in range(len(q)):
        wq = w @ q[b]
        for n in range(len(views)):
            a = views[n] @ wq
            p = np.exp(a - a.max())
            p /= p.sum()
            out[b, n] = p @ (views[n] @ q[b])
    return out


def test_cmic_embeddings_and_score(tiny_model):
    torch.manual_seed(1)
    queries = torch.rand(3, 4, 32, 32) * 2 - 1
    shapes = torch.rand(5, 3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        q = tiny_model.embed_queries(queries)
        v = tiny_model.embed_views(shapes)
        scores = tiny_model.score(q, v)
    assert q.shape == (3, 16) and v.shape == (5, 3, 16) and scores.shape == (3, 5)
    assert torch.allclose(q.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(v.norm(dim=-1), torch.ones(5, 3), atol=1e-5)
    # Views are encoded independently: one shape alone gives the same embeddings (eval mode).
    with torch.no_grad():
        assert torch.allclose(tiny_model.embed_views(shapes[2:3]), v[2:3], atol=1e-5)
    w = tiny_model.attention.linear_in.weight.detach()
    assert torch.allclose(tiny_model.attend(q), q @ w.T)
    expected = _numpy_scores(q, v, w)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The score is a convex combination of view cosines.
    cosines = torch.einsum("bd,nvd->bnv", q, v)
    assert (scores <= cosines.max(-1).values + 1e-6).all() and (scores >= cosines.min(-1).values - 1e-6).all()


def test_score_is_differentiable(tiny_model):
    model = init_model(TINY, seed=0).train()
    scores = model(torch.rand(2, 4, 32, 32), torch.rand(2, 3, 1, 32, 32))
    scores.sum().backward()
    assert model.attention.linear_in.weight.grad is not None
    assert model.query_encoder.resnet.conv1.weight.grad is not None
    assert model.rendering_encoder.resnet.fc[1].weight.grad is not None


def test_init_model_is_deterministic_and_keeps_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = init_model(TINY, 7), init_model(TINY, 7), init_model(TINY, 8)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["attention.linear_in.weight"], sc["attention.linear_in.weight"])
    assert not a.training


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "sub" / "m.pt", info={"epoch": 3, "note": "x"})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config == TINY
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "ibsr-checkpoint" and payload["version"] == 1 and payload["info"] == {"epoch": 3, "note": "x"}
    assert checkpoint_id(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert len(checkpoint_id(path)) == 16


def _save_payload(path, **changes):
    payload = {"format": "ibsr-checkpoint", "version": 1, "config": TINY.to_dict(),
               "state_dict": init_model(TINY, 0).state_dict(), "info": {}}
    payload.update(changes)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "not found"),
        (lambda p: (p.mkdir(), p)[1], "not a file"),
        (lambda p: (p.write_bytes(b"hello world"), p)[1], "not a readable"),
        (lambda p: (p.write_bytes(b""), p)[1], "not a readable"),
        (lambda p: (torch.save({"a": torch.zeros(2)}, p), p)[1], "format tag"),
        (lambda p: (torch.save([1, 2], p), p)[1], "format tag"),
        (lambda p: _save_payload(p, version=99), "version"),
        (lambda p: _save_payload(p, config={**TINY.to_dict(), "width": 12}), "mis-shaped"),
        (lambda p: _save_payload(p, config={**TINY.to_dict(), "depth": 3}), "config"),
        (lambda p: _save_payload(p, config={**TINY.to_dict(), "query_arch": "resnet50"}), "missing"),
        (lambda p: _save_payload(p, state_dict={**init_model(TINY, 0).state_dict(), "extra.weight": torch.zeros(1)}), "unexpected"),
        (lambda p: _save_payload(p, state_dict=[1]), "not a dict"),
    ],
)
def test_load_checkpoint_errors_name_the_file(tmp_path, make, message):
    path = make(tmp_path / "bad.pt")
    with pytest.raises(IbsrError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_checkpoint_truncated_and_pickle_bomb(tmp_path, tiny_model):
    good = save_checkpoint(tiny_model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(IbsrError, match="truncated"):
        load_checkpoint(truncated)

    class Evil:
        def __reduce__(self):
            return (pytest.fail, ("code ran while loading a checkpoint",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "ibsr-checkpoint", "x": Evil()}, evil, pickle_module=pickle)
    with pytest.raises(IbsrError):
        load_checkpoint(evil)


def test_load_checkpoint_points_jittor_files_to_import(tmp_path):
    path = tmp_path / "authors.pkl"
    stream = pickle.dumps({"attention.linear_in.weight": np.zeros((2, 2), np.float32)}, protocol=4)
    path.write_bytes(stream + hashlib.sha1(stream).digest() + b"HCAJSLHD")
    with pytest.raises(IbsrError, match="import-jittor"):
        load_checkpoint(path)


def test_checkpoint_id_missing_file(tmp_path):
    with pytest.raises(IbsrError, match="not found"):
        checkpoint_id(tmp_path / "nope.pt")


def test_default_weights_missing_creates_nothing(tmp_path, monkeypatch):
    assert default_weights_path().name == "default.pt"
    assert default_weights_path().parent.name == "weights"
    fake = tmp_path / "weights" / "default.pt"
    monkeypatch.setattr(checkpoint_module, "default_weights_path", lambda: fake)
    with pytest.raises(IbsrError, match="ibsr-train"):
        load_default_model()
    assert not (tmp_path / "weights").exists()


# --------------------------------------------------------------------------- color transfer


def test_lab_round_trip_and_reference_values():
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-9)
    rgb32 = rgb.float()
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb32)), rgb32, atol=1e-4)
    # Reference points: white, black, and sRGB red (L=53.24, a=80.09, b=67.20 for D65).
    probe = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(probe)[0, :, :, 0].T
    np.testing.assert_allclose(lab[0].numpy(), [100, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1].numpy(), [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[2].numpy(), [53.24, 80.09, 67.20], atol=0.02)


def _blob_mask(b, h, w):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 3) ** 2).float()
    return mask.expand(b, 1, h, w).clone()


def test_color_transfer_matches_style_statistics_in_mask():
    torch.manual_seed(0)
    content = torch.rand(2, 3, 32, 32)  # noisy: the transfer leaves the gamut, so compare unclamped
    style = torch.stack([0.5 + 0.2 * torch.rand(32, 32), 0.3 + 0.1 * torch.rand(32, 32), 0.2 + 0.1 * torch.rand(32, 32)])
    style = torch.stack([style, style.flip(0)])  # a different (bluish) style for the second image
    mask = _blob_mask(2, 32, 32)
    style[:, :, :4] = 0.0  # style background outside the mask must not count
    out = color_transfer(content, style, content_mask=mask, style_mask=mask, clamp=False)
    mean_o, std_o = masked_mean_std(rgb_to_lab(out), mask)
    mean_s, std_s = masked_mean_std(rgb_to_lab(style), mask)
    assert torch.allclose(mean_o, mean_s, atol=1e-2)
    assert torch.allclose(std_o, std_s, atol=1e-2)
    background = mask.expand_as(out) == 0
    assert torch.equal(out[background], content[background])  # background untouched


def test_color_transfer_in_gamut_is_unchanged_by_clamping():
    torch.manual_seed(0)
    # Grayish content, warm style with luminance texture: the result stays inside [0, 1].
    content = 0.35 + 0.3 * torch.rand(2, 1, 32, 32) + 0.05 * torch.rand(2, 3, 32, 32)
    style = torch.tensor([0.6, 0.45, 0.35]).view(1, 3, 1, 1) + 0.1 * torch.rand(2, 1, 32, 32) + 0.03 * torch.rand(2, 3, 32, 32)
    out = color_transfer(content, style)
    assert torch.allclose(out, color_transfer(content, style, clamp=False))
    mean_o, std_o = masked_mean_std(rgb_to_lab(out), None)
    mean_s, std_s = masked_mean_std(rgb_to_lab(style), None)
    assert torch.allclose(mean_o, mean_s, atol=1e-2) and torch.allclose(std_o, std_s, atol=1e-2)


def test_color_transfer_whole_image_and_empty_mask():
    torch.manual_seed(1)
    content, style = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    out = color_transfer(content, style, clamp=False)
    mean_o, std_o = masked_mean_std(rgb_to_lab(out), None)
    mean_s, std_s = masked_mean_std(rgb_to_lab(style), None)
    assert torch.allclose(mean_o, mean_s, atol=1e-2) and torch.allclose(std_o, std_s, atol=1e-2)
    clamped = color_transfer(content, style, torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))
    assert torch.isfinite(clamped).all() and clamped.min() >= 0 and clamped.max() <= 1
