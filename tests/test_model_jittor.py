"""Reading the authors' Jittor checkpoints: both pickle encodings, the SHA-1 trailer, the
PyTorch zip variant, architecture inference, and refusal of anything else."""

import hashlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from ibsr.errors import IbsrError
from ibsr.model import ModelConfig, import_jittor, infer_config, init_model, read_jittor_state

TINY = ModelConfig(query_arch="resnet50", render_arch="resnet18", width=8, embed_dim=16, query_size=32, render_size=32, views=3)


@pytest.fixture(scope="module")
def source():
    """A random CMIC whose BatchNorm statistics are not the defaults (so a mix-up shows)."""
    model = init_model(TINY, seed=3)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(4)
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
    return model.eval()


def jittor_arrays(model):
    """The authors' dict: float32 C-contiguous arrays under their names, no num_batches_tracked."""
    return {
        name: np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)
        for name, t in model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }


def with_trailer(stream: bytes) -> bytes:
    return stream + hashlib.sha1(stream).digest() + b"HCAJSLHD"


def _fake_var(array):  # stands in for jittor.jittor_core.Var while pickling
    return array


class FakeVar:
    """Pickles like jittor's Var: reduce = (jittor.jittor_core.Var, (ndarray,))."""

    def __init__(self, array):
        self.array = array

    def __reduce__(self):
        return (_fake_var, (self.array,))


def pickle_as_jittor_vars(arrays) -> bytes:
    """Pickle with each value as a `jittor.jittor_core.Var`, as jittor >= 1.3.9 does, using
    fake `jittor` modules that exist only while pickling."""
    jittor = types.ModuleType("jittor")
    core = types.ModuleType("jittor.jittor_core")
    jittor.jittor_core = core
    core.Var = _fake_var
    saved = (_fake_var.__module__, _fake_var.__qualname__)
    _fake_var.__module__, _fake_var.__qualname__ = "jittor", "jittor_core.Var"
    sys.modules["jittor"], sys.modules["jittor.jittor_core"] = jittor, core
    try:
        return pickle.dumps({k: FakeVar(v) for k, v in arrays.items()}, protocol=4)
    finally:
        del sys.modules["jittor"], sys.modules["jittor.jittor_core"]
        _fake_var.__module__, _fake_var.__qualname__ = saved


def assert_same_model(imported, source):
    torch.manual_seed(0)
    queries = torch.rand(2, 4, 40, 40) * 2 - 1
    shapes = torch.rand(3, TINY.views, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        q_src, v_src = source.embed_queries(queries), source.embed_views(shapes)
        q_imp, v_imp = imported.embed_queries(queries), imported.embed_views(shapes)
        s_src, s_imp = source.score(q_src, v_src), imported.score(q_imp, v_imp)
    for a, b in ((q_imp, q_src), (v_imp, v_src), (s_imp, s_src)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert not imported.training


def test_plain_ndarray_pickle_with_trailer(tmp_path, source):
    path = tmp_path / "retrieval_net.pt"
    path.write_bytes(with_trailer(pickle.dumps(jittor_arrays(source), protocol=4)))
    model = import_jittor(path)
    assert model.config == ModelConfig(query_arch="resnet50", render_arch="resnet18", width=8, embed_dim=16)
    assert model.config.query_size == 224 and model.config.views == 12
    assert_same_model(model, source)
    assert (model.state_dict()["query_encoder.resnet.bn1.num_batches_tracked"] == 0).all()


def test_var_encoding_needs_no_jittor(tmp_path, source):
    stream = pickle_as_jittor_vars(jittor_arrays(source))
    assert b"jittor_core.Var" in stream and "jittor" not in sys.modules
    path = tmp_path / "retrieval_net.pkl"
    path.write_bytes(with_trailer(stream))
    assert_same_model(import_jittor(path, config=TINY), source)
    assert "jittor" not in sys.modules


@pytest.mark.parametrize("protocol", [2, 5])
def test_plain_pickle_without_trailer_other_protocols(tmp_path, source, protocol):
    from collections import OrderedDict

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(jittor_arrays(source)), protocol=protocol))
    assert_same_model(import_jittor(path), source)


@pytest.mark.parametrize("as_tensors", [True, False])
def test_pytorch_zip_variant(tmp_path, source, as_tensors):
    path = tmp_path / "zip.pt"
    arrays = jittor_arrays(source)
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()} if as_tensors else arrays, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    assert_same_model(import_jittor(path), source)


def test_pytorch_zip_variant_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (pytest.fail, ("code ran while reading a checkpoint",))

    path = tmp_path / "evil.pt"
    torch.save({"a": Evil()}, path)
    with pytest.raises(IbsrError, match="unreadable"):
        read_jittor_state(path)


def test_corrupt_digest_is_refused(tmp_path, source):
    data = bytearray(with_trailer(pickle.dumps(jittor_arrays(source), protocol=4)))
    data[200] ^= 0xFF
    path = tmp_path / "corrupt.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(IbsrError, match="SHA-1") as info:
        read_jittor_state(path)
    assert str(path) in str(info.value)


def test_forbidden_global_is_refused_and_not_run(tmp_path):
    ran = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {ran}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(with_trailer(pickle.dumps({"attention.linear_in.weight": Evil()}, protocol=4)))
    with pytest.raises(IbsrError, match="refusing"):
        read_jittor_state(path)
    assert not ran.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ([np.zeros(2, np.float32)], "not a state dict"),
        ({"a": "text"}, "not a float array"),
        ({"a": np.zeros(2, np.int64)}, "not a float array"),
    ],
)
def test_non_state_dicts_are_refused(tmp_path, payload, message):
    path = tmp_path / "odd.pkl"
    path.write_bytes(with_trailer(pickle.dumps(payload, protocol=4)))
    with pytest.raises(IbsrError, match=message):
        read_jittor_state(path)


def test_garbage_and_truncated_files(tmp_path, source):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(IbsrError, match="not a Jittor checkpoint"):
        read_jittor_state(garbage)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(jittor_arrays(source), protocol=4)[:5000])
    with pytest.raises(IbsrError, match="unreadable"):
        read_jittor_state(truncated)
    with pytest.raises(IbsrError, match="not found"):
        read_jittor_state(tmp_path / "missing.pkl")


def test_every_key_must_be_used_and_present(tmp_path, source):
    arrays = jittor_arrays(source)
    extra = dict(arrays, **{"attention.linear_out.bias": np.zeros(16, np.float32)})
    path = tmp_path / "extra.pkl"
    path.write_bytes(pickle.dumps(extra, protocol=4))
    with pytest.raises(IbsrError, match="unexpected keys: attention.linear_out.bias"):
        import_jittor(path)
    missing = {k: v for k, v in arrays.items() if k != "rendering_encoder.resnet.layer2.0.bn1.running_var"}
    path.write_bytes(pickle.dumps(missing, protocol=4))
    with pytest.raises(IbsrError, match="missing"):
        import_jittor(path)
    path.write_bytes(pickle.dumps(arrays, protocol=4))
    wrong = ModelConfig(query_arch="resnet50", render_arch="resnet18", width=16, embed_dim=16)
    with pytest.raises(IbsrError, match="mis-shaped"):
        import_jittor(path, config=wrong)


def test_infer_config_depths():
    for q_arch, r_arch in (("resnet34", "resnet18"), ("resnet18", "resnet50")):
        config = ModelConfig(query_arch=q_arch, render_arch=r_arch, width=4, embed_dim=8)
        arrays = jittor_arrays(init_model(config, 0))
        assert infer_config(arrays) == config
    arrays = jittor_arrays(init_model(ModelConfig(query_arch="resnet18", render_arch="resnet18", width=4, embed_dim=8), 0))
    del arrays["query_encoder.resnet.layer4.1.conv1.weight"]
    arrays = {k: v for k, v in arrays.items() if not k.startswith("query_encoder.resnet.layer4.1.")}
    with pytest.raises(IbsrError, match="cannot tell the ResNet"):
        infer_config(arrays)
