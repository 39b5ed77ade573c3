"""Compute precision by CPU: int8 or bf16 where the CPU computes it natively and it pays, float32 elsewhere.

Where `ibsr.runtime` runs a network in ONNX Runtime (IBSR_RUNTIME=auto on x86-64 CPUs) it runs
in float32, or in int8 where `precision` says so (the mask network and the query encoder);
torch has no int8 and runs `torch_precision` (bf16 or float32). IBSR_PRECISION=bf16 makes
`auto` pick torch, so that asking for bf16 still measures bf16.

One place decides (`precision(component)`), from `$IBSR_PRECISION`:

- `auto` (default): on a CPU with int8 dot products (AVX512-VNNI, AVX-VNNI or AMX) the *mask
  network* and the *query encoder* (search, serve) run in int8 in ONNX Runtime (the query
  encoder's first five convolutions and its head in float32). Each was adopted by a rule written
  before its fresh sets were scored: the mask network 1.6-2.2x faster on a Zen 4, its mask IoU
  0.9341 -> 0.9335, no search row worse (benchmarks/RESULTS.md, "The mask network in int8");
  the query encoder 1.6-1.8x faster, embeddings at cosine >= 0.995 to float32's, no search row
  worse ("The query encoder in int8 with its first convolutions in float32"). Elsewhere the
  query encoder runs in float32, and under bf16 autocast where *torch* runs it on a CPU with
  AVX512-BF16 or AMX (faster there; torch has no int8: `torch_precision`); a bf16 matmul is far
  *slower* than float32 on other CPUs. CUDA runs float32 (unchanged).
  The *rendering encoder* (index builds) and the *CPU rerank* stay float32: bf16 view
  embeddings drifted to cosine 0.93 from float32 ones (a stored index would then depend on the
  CPU that built it), and the rerank gained nothing for one query while bf16 logits would break
  the float32 bound that `--prefilter none` prunes with (benchmarks/RESULTS.md, "Thread cliffs
  and precision by CPU").
- `float32`: float32 everywhere (the same numbers on every CPU).
- `bf16`: bf16 wherever it is offered (query and rendering encoders, the rerank GEMM),
  whatever the CPU (for measuring).
- `int8`: the *mask network* and the *query encoder* in int8 wherever ONNX Runtime runs them
  (`ibsr.runtime.quantize`; the query encoder's first convolutions and head stay float32),
  whatever the CPU, everything else float32 (for measuring). int8 exists only in ONNX Runtime:
  where torch runs them (IBSR_RUNTIME=torch), they run in float32.

Tolerance of the bf16 query encoder against float32 (shipped model, generated photos;
tests/test_precision.py): query cosine >= 0.99, attention scores within 0.05, top-5 overlap
>= 0.9. Index builds are float32 under `auto` on every CPU: builds of one catalog on one
machine are byte-identical (repairs and Ray builds against local ones too), and builds on
different CPUs agree to float32 rounding, never to bf16's.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext

PRECISION_ENV = "IBSR_PRECISION"
PRECISIONS = ("auto", "float32", "bf16", "int8")


@functools.cache  # the CPU does not change
def _cpu_flags() -> frozenset:
    try:
        return frozenset(open("/proc/cpuinfo").read().split())
    except OSError:
        return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): elsewhere, e.g. an AVX2-only
    EPYC, a bf16 matmul is far slower than float32 (benchmarks/RESULTS.md, "Rerank under load")."""
    return not _cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8).
    Without them ONNX Runtime's uint8 x int8 kernels saturate 16-bit sums: less exact, and not
    measured faster enough to pay (benchmarks/RESULTS.md, "CPU runtime", static int8)."""
    return not _cpu_flags().isdisjoint({"avx512_vnni", "avx_vnni", "amx_int8"})


def requested() -> str:
    value = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        from ibsr.errors import IbsrError

        raise IbsrError(f"${PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, not {value!r}")
    return value


COMPONENTS = ("queries", "views", "rerank", "mask")
INT8_COMPONENTS = ("queries", "mask")  # those with an int8 file (`ibsr.runtime.quantize`)


def precision(component: str, device_type: str = "cpu") -> str:
    """"bf16", "int8" or "float32" for `component` (one of COMPONENTS) on `device_type`."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, not {component!r}")
    want = requested()
    if want == "int8":
        return "int8" if component in INT8_COMPONENTS and device_type == "cpu" else "float32"
    if want == "bf16" and component == "mask":
        return "float32"  # the mask network has no bf16 path
    if want != "auto":
        return want
    if device_type != "cpu":
        return "float32"
    if component in INT8_COMPONENTS and cpu_has_int8_dot():
        return "int8"
    return "bf16" if component == "queries" and cpu_has_bf16() else "float32"


def torch_precision(component: str, device_type: str = "cpu") -> str:
    """`precision` where torch runs `component`: torch has no int8, so there it runs what `auto`
    picks without int8 (the query encoder in bf16 on a CPU with AVX512-BF16 or AMX), else float32."""
    chosen = precision(component, device_type)
    if chosen != "int8":
        return chosen
    auto_bf16 = requested() == "auto" and component == "queries" and cpu_has_bf16()
    return "bf16" if auto_bf16 else "float32"


def encoder_autocast(component: str, device_type: str = "cpu"):
    """The context an encoder ("queries" or "views") runs under in torch: bf16 autocast or nothing.
    Autocast state is per thread: enter it in the thread that runs the model (each pool worker)."""
    if torch_precision(component, device_type) != "bf16":
        return nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)


def rerank_dtype(device_type: str = "cpu"):
    """The CPU rerank GEMM's dtype (`ibsr.kernels.torch_path` compute_dtype); None = its default."""
    import torch

    return torch.bfloat16 if device_type == "cpu" and precision("rerank", device_type) == "bf16" else None
