"""Which runtime runs the networks on a CPU: torch (the reference) or ONNX Runtime.

One place decides (`choose(component)`), from `$IBSR_RUNTIME` or a `runtime=` argument
(`ibsr.model.inference.embed_queries / embed_views`, `ibsr.photos.mask_model`):

- `auto` (default): ONNX Runtime where it measured faster (`auto_prefers_onnx`: x86-64 CPUs),
  torch elsewhere, and torch with a one-line warning when onnxruntime does not import or a
  network fails to export.
- `torch`: torch for everything (with `ibsr.precision`'s bf16 autocast where it applies).
- `onnx`: ONNX Runtime for every component; an error when it cannot run.

ONNX Runtime runs float32, and the mask network and the query encoder in int8 where `ibsr.precision` says so
(`auto` on CPUs with int8 dot products, or IBSR_PRECISION=int8); a failed int8 export falls
back to the float32 file with a one-line warning.

Components: "queries" (the query encoder, L2-normalized output: `CMIC.embed_queries`),
"views" (the rendering encoder, one view per row: `CMIC.embed_views` without the reshape),
"mask" (the mask network's logits). CUDA inputs and modules in train mode always run torch.

The ONNX files are exported from the module in memory and cached by a hash of its weights
(`ibsr.runtime.onnx_backend`); a module whose weights change in place (an optimizer step, a
`load_state_dict`) is exported again at its next call.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

import torch

from ibsr.runtime import onnx_backend

RUNTIME_ENV = "IBSR_RUNTIME"
RUNTIMES = ("auto", "torch", "onnx")
COMPONENTS = ("queries", "views", "mask")

_lock = threading.Lock()  # one export at a time; concurrent first calls (ibsr-serve) share it
# module -> {(component, input shape, int8): (weights version, encoder, failure)}: a module's float32
# and int8 sessions live side by side (a caller without calibration gets float32), each replaced
# when the weights change
_loaded: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def _forget_sessions_in_child() -> None:  # a forked child loads its own: sessions are not fork-safe
    global _lock
    _loaded.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_sessions_in_child)


def requested(runtime: str | None = None) -> str:
    value = (runtime if runtime is not None else os.environ.get(RUNTIME_ENV, "auto")).strip().lower() or "auto"
    if value not in RUNTIMES:
        from ibsr.errors import IbsrError

        raise IbsrError(f"${RUNTIME_ENV} (or runtime=) must be one of {', '.join(RUNTIMES)}, not {value!r}")
    return value


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def auto_prefers_onnx(component: str) -> bool:
    """The rule for `auto`: ONNX Runtime on x86-64 CPUs, torch elsewhere and whenever
    IBSR_PRECISION=bf16 is asked for (bf16 exists only in torch).

    Why: as ibsr runs them (one item per call on single-threaded workers), ONNX Runtime float32
    ran every component several times faster than the torch it replaces (torch bf16 autocast for
    the query encoder, float32 for the others), quiet or beside a competing process, with
    embeddings equal to torch float32's (benchmarks/RESULTS.md, "CPU runtime"). That was one
    x86-64 CPU (AVX512-BF16, no AMX); ONNX Runtime has float32 kernels for every x86-64 level,
    and the one case that might close the gap, torch's bf16 on AMX (queries), is unmeasured.
    ARM and other CPUs stay torch until measured."""
    import platform

    from ibsr.precision import requested as precision_requested

    if precision_requested() == "bf16":
        return False
    return platform.machine().lower() in ("x86_64", "amd64")


def choose(component: str, runtime: str | None = None, device_type: str = "cpu") -> str:
    """"onnx" or "torch" for `component` on `device_type`, before any export is tried."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, not {component!r}")
    want = requested(runtime)
    if device_type != "cpu" or want == "torch":
        return "torch"
    if want == "onnx":
        return "onnx"
    return "onnx" if auto_prefers_onnx(component) else "torch"


def onnx_encoder(module: torch.nn.Module, component: str, input_shape: tuple, runtime: str | None = None,
                 calibration=None):
    """The ONNX Runtime function that replaces `module(x)` for CPU inputs of shape
    B x `input_shape`, or None where torch runs it. Loaded (or exported) once per module and
    weights; called from the thread that then hands the items to the workers. `calibration`
    (a function returning 1 x `input_shape` arrays as the caller feeds the network) lets the
    module run in int8 where `ibsr.precision` asks for it; without one it runs float32."""
    if module.training or choose(component, runtime) != "onnx":
        return None
    explicit = requested(runtime) == "onnx"
    int8 = calibration is not None and precision(component) == "int8"
    key, version = (component, tuple(input_shape), int8), _weights_version(module)
    with _lock:
        sessions = _loaded.setdefault(module, {})
        entry = sessions.get(key)
        if entry is None or entry[0] != version:
            entry = (version, *_load(module, component, tuple(input_shape), calibration if int8 else None))
            sessions[key] = entry
    encoder, failure = entry[1], entry[2]
    if failure:
        if explicit:
            from ibsr.errors import IbsrError

            raise IbsrError(f"{failure}; set {RUNTIME_ENV}=torch (or auto)")
        warn_once(f"{failure}; using torch")
    return encoder


def describe(component: str, runtime: str | None = None, device_type: str = "cpu") -> str:
    """How `component` runs here, as chosen: "onnx float32", "onnx int8", "torch bf16", ...
    (a failed export then falls back with a warning: see `onnx_encoder`)."""
    from ibsr.precision import torch_precision

    if choose(component, runtime, device_type) == "onnx":
        return f"onnx {precision(component)}"
    return f"torch {torch_precision(component, device_type)}"


def _weights_version(module: torch.nn.Module) -> tuple:
    """Changes whenever a weight or buffer is replaced or changed in place: the identities and
    in-place versions of the module's tensors.

    Every network call asks for it, with the GIL held. A walk of the modules' own dicts costs
    ~0.3 ms for the CMIC model, so the walk's tensor list is kept until any module of the
    process registers a parameter, buffer or submodule (torch's global registration hooks: an
    assignment, `load_state_dict(assign=True)`); reading the versions of the kept list costs
    a tenth of that."""
    kept = _tensors.get(module)
    if kept is None or kept[0] != _registrations[0]:
        registrations = _registrations[0]  # read before the walk: one during it walks again next call
        tensors = _walk_tensors(module)
        kept = _tensors[module] = (registrations, tuple(map(id, tensors)), tensors)
    return kept[1], tuple(t._version for t in kept[2])


def _walk_tensors(module: torch.nn.Module) -> list:
    stack, tensors = [module], []
    while stack:
        sub = stack.pop()
        tensors.extend(t for t in (*sub._parameters.values(), *sub._buffers.values()) if t is not None)
        stack.extend(child for child in sub._modules.values() if child is not None)
    return tensors


def _count_registration(*_) -> None:
    _registrations[0] += 1  # two at once may count one: the count still differs from the kept one


# module -> (registrations when walked, the tensors' ids, the tensors); see _weights_version
_tensors: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_registrations = [0]
for _register in (torch.nn.modules.module.register_module_parameter_registration_hook,
                  torch.nn.modules.module.register_module_buffer_registration_hook,
                  torch.nn.modules.module.register_module_module_registration_hook):
    _register(_count_registration)


def precision(component: str) -> str:
    """"int8" or "float32": what ONNX Runtime runs `component` in (`ibsr.precision`)."""
    from ibsr.precision import precision as wanted

    return "int8" if wanted(component) == "int8" else "float32"


def _load(module, component: str, input_shape: tuple, calibration) -> tuple:
    """(encoder, None) or (None, one-line reason)."""
    if not onnx_backend.available():
        return None, "onnxruntime is not installed (pip install onnxruntime)"
    try:
        return onnx_backend.load(module, component, input_shape, warn=warn_once, calibration=calibration), None
    except onnx_backend.ExportError as e:
        if not e.int8:
            return None, str(e)
        warn_once(f"{e}; the {component} network runs in float32")  # int8 is a speed-up, never required
        return _load(module, component, input_shape, None)
