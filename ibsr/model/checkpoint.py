"""Checkpoint files: one `torch.save` dict that holds the config next to the weights.

    {"format": "ibsr-checkpoint", "version": 1, "config": ModelConfig.to_dict(),
     "state_dict": CMIC.state_dict(), "info": {...}}

Files are read with `torch.load(weights_only=True)`, so a checkpoint can carry tensors and
plain Python values only (`info` must hold str/int/float/bool/None and lists/dicts of them),
and loading one never runs code. The *encoder id* of a checkpoint (`checkpoint_id`) is the
first 16 hex digits of the file's SHA-256; an index records it and refuses other encoders.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import torch

from ibsr.errors import IbsrError
from ibsr.files import atomic_path
from ibsr.model.cmic import CMIC
from ibsr.model.config import ModelConfig
from ibsr.runtime.digest import module_digest

FORMAT = "ibsr-checkpoint"
VERSION = 1
JITTOR_MAGIC = b"HCAJSLHD"
_HOW_TO_MAKE = "train one with `ibsr-train`, or convert the authors' weights with `ibsr-train import-jittor`"


def default_weights_path() -> pathlib.Path:
    """Where the package's shipped weights live (the file may not exist in a dev checkout)."""
    return pathlib.Path(__file__).resolve().parent / "weights" / "default.pt"


def init_model(config: ModelConfig, seed: int = 0) -> CMIC:
    """A randomly initialized CMIC, identical for the same (config, seed), in eval mode.

    The global RNG state is left untouched, so callers' own random streams do not shift.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CMIC(config)
    return model.eval()


def half_precision(state_dict: dict) -> dict:
    """Floating tensors as float16 (half the file; shipped weights are stored so), except the
    BatchNorm running statistics: variances below float16's normal range (6e-5) would lose
    their precision. Loading casts everything back to the model's float32."""
    def keep(name: str, value: torch.Tensor) -> bool:
        return not value.is_floating_point() or name.endswith(("running_mean", "running_var"))
    return {k: v if keep(k, v) else v.half() for k, v in state_dict.items()}


def save_checkpoint(model: CMIC, path, info: dict | None = None, half: bool = False) -> pathlib.Path:
    """Write `model` to `path` atomically (a reader never sees a half-written file);
    `half` stores the weights in float16 (`half_precision`)."""
    path = pathlib.Path(path)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": half_precision(state_dict) if half else state_dict,
        "info": dict(info or {}),
    }
    # 0o600: a private file (ibsr.files); torch.save into an open file stores its archive as
    # "archive", not under the temporary name: the same bytes (checkpoint_id) for the same model.
    with atomic_path(path, fsync=True, mode=0o600) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def checkpoint_id(path) -> str:
    """First 16 hex digits of the file's SHA-256, read in chunks (files can be ~100 MB)."""
    path = _existing_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def rendering_id(model: CMIC) -> str:
    """First 16 hex digits of a SHA-256 over everything that decides a view embedding: the
    rendering encoder's weights and BatchNorm statistics (as float32, in name order) and the
    view size. Two checkpoints with the same rendering id embed the same renderings identically,
    so an index built with one is valid for the other (`ibsr-train adapt --side query`
    fine-tunes only the query side and keeps it)."""
    return module_digest(model.rendering_encoder, f"{model.config.render_arch}/{model.config.render_size}")


def load_checkpoint(path, map_location="cpu") -> CMIC:
    """Rebuild the CMIC stored in `path`, in eval mode. Any bad file is an `IbsrError`."""
    return load_checkpoint_with_info(path, map_location)[0]


def load_checkpoint_with_info(path, map_location="cpu") -> tuple[CMIC, dict]:
    """`load_checkpoint` and the `info` dict the file was saved with (`ibsr-train` stores its
    config, step and validation there; {} when it has none), from one read of the file."""
    path = _existing_file(path)
    payload = _read_payload(path, map_location)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except IbsrError as e:
        raise IbsrError(f"bad model config in checkpoint ({e}); {_HOW_TO_MAKE}", path) from None
    model = CMIC(config)
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict):
        raise IbsrError(f"checkpoint 'state_dict' is a {type(state_dict).__name__}, not a dict; {_HOW_TO_MAKE}", path)
    check_state_dict(model, state_dict, path)
    model.load_state_dict(state_dict)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)  # the module follows its tensors (e.g. "cuda")
    info = payload.get("info")
    return model.eval(), info if isinstance(info, dict) else {}


def load_default_model(map_location="cpu") -> CMIC:
    """The shipped weights, or an `IbsrError` that says how to make them."""
    path = default_weights_path()
    if not path.is_file():
        raise IbsrError(
            f"no default weights are installed at {path}; pass --weights PATH, or {_HOW_TO_MAKE} "
            f"and copy the result there"
        )
    return load_checkpoint(path, map_location)


def key_mismatches(expected: dict, state: dict, skip_missing=lambda key: False) -> list[str]:
    """What differs between a model's state dict and loaded weights, a few names per kind."""
    missing = [k for k in expected if k not in state and not skip_missing(k)]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {_shape_of(state[k])} != {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and _shape_of(state[k]) != tuple(v.shape)]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            problems.append(f"{len(names)} {label} keys: {', '.join(names[:3])}{more}")
    return problems


def check_state_dict(model: torch.nn.Module, state_dict: dict, path) -> None:
    """Refuse a state dict whose key set or shapes differ from `model`'s, naming a few."""
    problems = key_mismatches(model.state_dict(), state_dict)
    if problems:
        raise IbsrError(
            f"weights do not match the checkpoint's model config ({'; '.join(problems)}); "
            f"the file is damaged or was edited: {_HOW_TO_MAKE}",
            path,
        )


def _shape_of(value):
    """A tensor's or ndarray's shape; the type name for anything else (a corrupt entry)."""
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__


def _existing_file(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise IbsrError(f"checkpoint not found; check the path, or {_HOW_TO_MAKE}", path)
    if not path.is_file():
        raise IbsrError("checkpoint path is not a file; pass the .pt file itself", path)
    return path


def _read_payload(path: pathlib.Path, map_location) -> dict:
    if _has_jittor_trailer(path):
        raise IbsrError(
            "this is one of the authors' Jittor checkpoints, not an ibsr checkpoint; convert it "
            "with `ibsr-train import-jittor`",
            path,
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files: all mean "unreadable"
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise IbsrError(
            f"not a readable ibsr checkpoint (truncated, or not a torch file: {reason}); "
            f"re-download or re-create it: {_HOW_TO_MAKE}",
            path,
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IbsrError(
            f"not an ibsr checkpoint (no format tag {FORMAT!r}; a bare state dict or another "
            f"program's file?); {_HOW_TO_MAKE}",
            path,
        )
    version = payload.get("version")
    if version != VERSION:
        raise IbsrError(
            f"checkpoint format version {version!r} is not supported (this ibsr reads version "
            f"{VERSION}); use the ibsr release that wrote it, or re-create it",
            path,
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise IbsrError(f"checkpoint lacks {key!r}; the file is damaged: {_HOW_TO_MAKE}", path)
    return payload


def _has_jittor_trailer(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < len(JITTOR_MAGIC):
            return False
        f.seek(-len(JITTOR_MAGIC), os.SEEK_END)
        return f.read() == JITTOR_MAGIC
