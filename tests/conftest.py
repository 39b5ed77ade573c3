"""Shared fixtures: a tiny model, a small generated catalog, and an index built from them.

Everything is generated here (no downloads): `ibsr.synth` makes the meshes, and the model is
a deterministic random init at a tiny width so the suite stays fast on a 2-core CPU.
"""

from __future__ import annotations

import os
import tempfile

# Read by triton at import time: kernel tests run the Triton kernels in the interpreter on CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
# The suite runs as if no mask network were installed (automatic masks = GrabCut), whether or
# not ibsr/model/weights/mask.pt is shipped; tests/test_mask_net.py installs its own. An
# environment variable, so that worker processes (Ray) see the same.
os.environ["IBSR_MASK_WEIGHTS"] = os.devnull
# The ONNX files the suite exports (ibsr.runtime: each tiny model it builds and searches with)
# go to a cache of its own, kept across runs on this machine, not into the user's ~/.cache.
os.environ.setdefault("IBSR_CACHE", os.path.join(tempfile.gettempdir(), "ibsr-test-cache"))

import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY = dict(query_arch="resnet18", render_arch="resnet18", width=8, embed_dim=64,
            query_size=32, render_size=32, views=12)
CATEGORIES = ["chair", "table", "lamp"]
SHAPES_PER_CATEGORY = 3


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    from ibsr.model import ModelConfig, init_model, save_checkpoint

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(init_model(ModelConfig(**TINY), seed=0), path)
    return path


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different encoder id."""
    from ibsr.model import ModelConfig, init_model, save_checkpoint

    path = tmp_path_factory.mktemp("weights") / "other.pt"
    save_checkpoint(init_model(ModelConfig(**TINY), seed=1), path)
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from ibsr.synth import write_catalog

    root = tmp_path_factory.mktemp("synth")
    write_catalog(root, CATEGORIES, SHAPES_PER_CATEGORY, seed=3)
    return root


@pytest.fixture(scope="session")
def catalog(synth_root) -> Path:
    return synth_root / "catalog"


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, catalog, tiny_weights) -> Path:
    """An index of the session catalog; tests must copy it (`index_copy`) before changing it."""
    from ibsr.indexer import Indexer

    index = tmp_path_factory.mktemp("index") / "ibsr_index"
    Indexer(index, weights=tiny_weights, workers=0).build(catalog, progress=False)
    return index


@pytest.fixture
def index_copy(built_index, tmp_path) -> Path:
    target = tmp_path / "ibsr_index"
    shutil.copytree(built_index, target)
    return target


@pytest.fixture
def catalog_copy(catalog, tmp_path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(catalog, target)
    return target


@pytest.fixture
def history_configs(tmp_path) -> Path:
    """The old stage configs, written back from docs/model-history.md's TOML blocks (each opens
    with its old path), so that their `extends` chains resolve as they did in the tree."""
    history = Path(__file__).parent.parent / "docs" / "model-history.md"
    blocks = re.findall(r"```toml\n# (configs/[\w/.-]+\.toml) at \w+\n(.*?)```", history.read_text(), re.S)
    assert blocks, "docs/model-history.md holds no stage config"
    for path, text in blocks:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path / "configs"
