"""Read the authors' Jittor checkpoints (`jt.save(retrieval_net.state_dict(), path)`) with
numpy and torch alone, and turn them into a `CMIC`.

What is on disk (see the project notes on Jittor checkpoints):

- legacy: a pickle stream (protocol 4) of a flat dict {name: float32 array}, optionally
  followed by a 20-byte SHA-1 of the stream and the 8 bytes `HCAJSLHD`. Jittor <= ~1.3.9
  pickles plain numpy arrays; later versions pickle each value as `jittor.jittor_core.Var`,
  whose reduce is `(Var, (ndarray,))`. A restricted unpickler maps that global to "return the
  array" and allows only the numpy globals that arrays need, so no other code can run.
- newer jittor writes a PyTorch zip archive (`PK\\x03\\x04`) when the name ends in `.pt`.

Names are the authors' (torchvision's ResNet names under `query_encoder.resnet.` and
`rendering_encoder.resnet.`, plus `attention.linear_in/linear_out.weight`): the names of
ibsr's own networks, so a backbone that registers `jittor_width` (ibsr.model.backbones) loads
by name. There is no `num_batches_tracked` (filled with zeros here; it has no effect with
momentum BatchNorm).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pathlib
import pickle

import numpy as np
import torch

from ibsr.errors import IbsrError
from ibsr.model.backbones import backbone_names, get_backbone
from ibsr.model.checkpoint import key_mismatches
from ibsr.model.cmic import CMIC
from ibsr.model.config import ModelConfig

MAGIC = b"HCAJSLHD"
DIGEST_BYTES = 20  # SHA-1
ZIP_MAGIC = b"PK\x03\x04"
ENCODERS = ("query_encoder", "rendering_encoder")


def _var_from_array(array):
    """Stands in for `jittor.jittor_core.Var`: a Var is pickled as Var(ndarray)."""
    return array


_sample = np.zeros(1, np.float32)
# Taken from numpy itself, so both numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) names
# resolve to the functions of the installed numpy.
_RECONSTRUCT = _sample.__reduce__()[0]
_FROMBUFFER = _sample.__reduce_ex__(5)[0]

_ALLOWED_GLOBALS = {
    ("jittor", "jittor_core.Var"): _var_from_array,
    ("jittor", "Var"): _var_from_array,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): dict,
    # Protocol 2 pickles store bytes as _codecs.encode(str, "latin1"): encoding text is harmless.
    ("_codecs", "encode"): codecs.encode,
}


class _ForbiddenGlobal(Exception):
    pass


class _CheckpointUnpickler(pickle.Unpickler):
    """Resolves only the globals that a Jittor state dict of arrays can contain."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _ForbiddenGlobal(f"persistent id {pid!r}")


# --------------------------------------------------------------------------- reading


def read_jittor_state(path) -> dict[str, np.ndarray]:
    """Read a Jittor checkpoint file into {name: float32 C-contiguous ndarray}."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise IbsrError("Jittor checkpoint not found; pass the path of the authors' .pkl/.pt file", path)
    data = path.read_bytes()
    if data.startswith(ZIP_MAGIC):
        state = _read_torch_zip(path)
    else:
        state = _unpickle_restricted(_pickle_stream(data, path), path)
    return _as_float32_arrays(state, path)


def _pickle_stream(data: bytes, path) -> bytes:
    """The pickle bytes, after checking the SHA-1 trailer when the file has one."""
    if not data.endswith(MAGIC):
        return data
    stream = data[: -len(MAGIC) - DIGEST_BYTES]
    digest = data[-len(MAGIC) - DIGEST_BYTES : -len(MAGIC)]
    if hashlib.sha1(stream).digest() != digest:
        raise IbsrError(
            "Jittor checkpoint is corrupt: its SHA-1 does not match the stored digest "
            "(truncated or altered download?); download it again",
            path,
        )
    return stream


def _unpickle_restricted(stream: bytes, path):
    if not stream.startswith(b"\x80"):
        raise IbsrError("not a Jittor checkpoint (neither a pickle nor a PyTorch zip file)", path)
    try:
        return _CheckpointUnpickler(io.BytesIO(stream)).load()
    except _ForbiddenGlobal as e:
        raise IbsrError(
            f"refusing to load: the file asks for {e}, which a Jittor state dict never holds "
            f"(it could run code); only use checkpoints from a source you trust",
            path,
        ) from None
    except Exception as e:  # truncated or malformed pickles raise many types
        raise IbsrError(f"Jittor checkpoint is unreadable ({type(e).__name__}: {e}); download it again", path) from None


def _numpy_safe_globals() -> list:
    """What torch's weights_only loader needs to rebuild float numpy arrays (jittor's .pt
    writer may store arrays rather than tensors)."""
    allowed = [_RECONSTRUCT, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes by their class
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in ("Float16DType", "Float32DType", "Float64DType") if hasattr(dtypes, n)]
    return allowed


def _read_torch_zip(path):
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise IbsrError(f"PyTorch-format Jittor checkpoint is unreadable ({reason}); download it again", path) from None
    if isinstance(state, dict):
        state = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    return state


def _as_float32_arrays(state, path) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise IbsrError(f"Jittor checkpoint holds a {type(state).__name__}, not a state dict", path)
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise IbsrError(
                f"Jittor checkpoint entry {name!r} is {type(value).__name__}"
                f"{'' if not isinstance(value, np.ndarray) else ' of ' + str(value.dtype)}, "
                f"not a float array; is this a state dict saved with jt.save?",
                path,
            )
        arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
    return arrays


# --------------------------------------------------------------------------- inference


def infer_config(state: dict[str, np.ndarray], path=None) -> ModelConfig:
    """Architectures, width and embedding size from the arrays themselves.

    Input sizes are not stored in weights (the networks are fully convolutional): they take the
    paper's 224 px, and views the paper's 12.
    """
    (query_arch, query_width), (render_arch, render_width) = (_infer_backbone(state, e, path) for e in ENCODERS)
    if query_width != render_width:
        raise IbsrError(
            f"the two encoders have different base widths ({query_width} and {render_width}); "
            f"ibsr models share one width",
            path,
        )
    embed_dim = _array(state, "attention.linear_in.weight", path).shape[0]
    return ModelConfig(query_arch=query_arch, render_arch=render_arch, width=query_width, embed_dim=embed_dim)


def _infer_backbone(state, encoder: str, path) -> tuple[str, int]:
    """The registered architecture, and its width, whose arrays sit under `encoder`."""
    tried = []  # backbones with arrays under their prefix that are not theirs
    for backbone in map(get_backbone, backbone_names()):
        prefix = f"{encoder}.{backbone.module_name}."
        arrays = {name[len(prefix):]: array for name, array in state.items() if name.startswith(prefix)}
        if not arrays:
            continue
        width = backbone.jittor_width(arrays)
        if width is not None:
            return backbone.name, width
        tried.append(backbone)
    if not tried:
        raise IbsrError(f"Jittor checkpoint holds no {encoder} backbone; is it a CMIC retrieval_net state dict?", path)
    raise IbsrError(f"cannot tell the {tried[0].family} under '{encoder}.{tried[0].module_name}.': its arrays "
                    f"fit none of {', '.join(b.name for b in tried)}", path)


def _array(state, name, path) -> np.ndarray:
    if name not in state:
        raise IbsrError(f"Jittor checkpoint lacks {name!r}; is it a CMIC retrieval_net state dict?", path)
    return state[name]


# --------------------------------------------------------------------------- import


def import_jittor(path, config: ModelConfig | None = None) -> CMIC:
    """Load the authors' Jittor checkpoint into a `CMIC` (eval mode).

    With `config` None, the networks are inferred from the arrays; otherwise every array must
    fit `config`. Every array must be used and every model tensor (bar `num_batches_tracked`)
    must be provided.
    """
    state = read_jittor_state(path)
    config = infer_config(state, path) if config is None else config
    model = CMIC(config)
    model.load_state_dict(_torch_state_dict(model, state, path))
    return model.eval()


def _torch_state_dict(model: CMIC, state: dict[str, np.ndarray], path) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    # jittor has no num_batches_tracked buffers: torch's are filled in below
    problems = key_mismatches(expected, state, skip_missing=lambda k: k.endswith("num_batches_tracked"))
    if problems:
        raise IbsrError(
            f"Jittor checkpoint does not fit the model {model.config.query_arch}/"
            f"{model.config.render_arch} width {model.config.width} ({'; '.join(problems)}); "
            f"omit the config to infer it from the file",
            path,
        )
    result = {}
    for name, target in expected.items():
        if name.endswith("num_batches_tracked"):
            result[name] = torch.zeros_like(target)  # Jittor keeps no such counter
        else:
            result[name] = torch.from_numpy(state[name].copy())
    return result
