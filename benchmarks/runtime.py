"""CPU runtime: the shipped model's networks in torch (float32, bf16 autocast), ONNX Runtime
(float32, int8 dynamic quantization; the mask network and the query encoder also in static int8,
the files IBSR_PRECISION=int8 runs: `ibsr.runtime.quantize`) and OpenVINO (float32, the same ONNX file; measured only
where `openvino` is installed: `pip install openvino`, not a dependency of ibsr), by batch,
threads and load, in one run.

    nice -n 10 .venv/bin/python benchmarks/runtime.py --json benchmarks/out/runtime.json

Accuracy first: --accuracy-shapes generated furniture shapes per category (seed 77), one photo
of each and their 12 views; each variant's embeddings against torch float32 (cosine), and the
attention scores of every photo against every shape (top-1 unchanged, top-5 overlap), with
the variant in the query encoder or the rendering encoder. int8 is timed only if it keeps
every top-1 (--int8-anyway times it regardless).

Speed: ms per photo (query encoder, 224 px; mask network, 224 px) or per 12-view shape
(rendering encoder, 128 px); one warm-up, then the median of --repeat calls (fewer past
--max-seconds), and the fastest of them. Modes: "call, N threads" = the whole batch in one call with N intra-op
threads (a torch OpenMP team / an ONNX Runtime intra-op pool); "items, N workers" = what ibsr
does (`ibsr.cpus.parallel_map`): one photo or one shape per call, on N single-threaded
workers. "busy" = the same with a `while True: pass` process competing for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ibsr import cpus  # noqa: E402
from ibsr.kernels import attention_scores  # noqa: E402
from ibsr.model import load_default_model  # noqa: E402
from ibsr.photos import mask_model, query  # noqa: E402
from ibsr.runtime import onnx_backend  # noqa: E402
from encoders import generated_inputs, top_overlap  # noqa: E402
from threads import competing_process, cpu_model, timings_ms  # noqa: E402


def cpu_flags() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
            if f in flags]


def timed_ms(fn, repeat: int, max_seconds: float) -> tuple[float, float]:
    """(median, min) ms: on a shared machine the min is the run least disturbed by others."""
    times = timings_ms(fn, repeat, max_seconds)
    return times[len(times) // 2], times[0]


def onnx_bytes(module, component: str, shape: tuple, int8: bool) -> bytes:
    """The cached float32 export (`ibsr.runtime`), or its int8 dynamic quantization."""
    onnx_backend.load(module, component, shape)  # exports into the cache when missing
    data = onnx_backend.cache_path(module, component, shape).read_bytes()
    return quantize_int8(data) if int8 else data


def shipped_int8_bytes(module, component: str, shape: tuple) -> bytes:
    """The static int8 file of the mask network or the query encoder, made (or read from the
    cache) as a search makes it."""
    inputs = mask_model.calibration_inputs if component == "mask" else query.calibration_inputs
    onnx_backend.load(module, component, shape, calibration=lambda: inputs(shape[-1]))
    return onnx_backend.cache_path(module, component, shape, int8=True).read_bytes()


def quantize_int8(data: bytes) -> bytes:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(data)
    del model.graph.value_info[:]  # the exporter's shape annotations trip the quantizer's shape inference
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)  # ConvInteger takes uint8 weights
        return dst.read_bytes()


def openvino_encoder(path: Path, threads: int):
    """The ONNX export compiled by OpenVINO for the CPU, tuned for one request at a time (what
    ibsr's single-item calls are): fn(x) -> output tensor."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                  "PERFORMANCE_HINT": "LATENCY",
                                                                  "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer([x.contiguous().numpy()])[compiled.output(0)].copy())


class Variant:
    """One way to run a network: fn(x, threads) -> output; `threads` = intra-op threads."""

    def __init__(self, name: str, module, component: str, shape: tuple):
        self.name, self.module = name, module
        self.sessions = {}
        if name.startswith("onnx"):
            data = (shipped_int8_bytes(module, component, shape) if name == "onnx int8 static"
                    else onnx_bytes(module, component, shape, name.endswith("int8")))
            self.sessions = {n: onnx_backend.OnnxEncoder(onnx_backend.session(data, n)) for n in (1, 2)}
        elif name.startswith("openvino"):
            onnx_backend.load(module, component, shape)  # exports into the cache when missing
            path = onnx_backend.cache_path(module, component, shape)
            self.sessions = {n: openvino_encoder(path, n) for n in (1, 2)}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
        if self.sessions:
            return self.sessions[threads](x)
        torch.set_num_threads(threads)  # this thread's team (a pool worker keeps its own 1)
        bf16 = self.name == "torch bf16"
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            return self.module(x).float()


def make_variants(names, module, component: str, shape: tuple) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = Variant(name, module, component, shape)
        except Exception as e:  # e.g. an int8 kernel this onnxruntime lacks: report, go on
            print(f"{component}: {name} unavailable ({str(e).splitlines()[0][:120]})")
    return out


def run_mode(variant: Variant, x: torch.Tensor, item: int, mode: str, threads: int):
    """A callable for the cell: one call with `threads`, or items of `item` rows on workers."""
    if mode == "call":
        return lambda: variant(x, threads)
    cpus.set_torch_workers(threads)
    chunks = [x[i:i + item] for i in range(0, len(x), item)]
    return lambda: list(cpus.parallel_map(lambda c: variant(c, 1), chunks))


def workloads(model, mask, batch: int, shapes: int):
    """(name, component, module, input, rows per item, units per call, modes)."""
    c = model.config
    g = torch.Generator().manual_seed(0)
    photos = torch.rand(batch, 4, c.query_size, c.query_size, generator=g) * 2 - 1
    views = torch.rand(shapes * c.views, 1, c.render_size, c.render_size, generator=g) * 2 - 1
    rgb = (torch.rand(1, 3, mask.config.size, mask.config.size, generator=g) * 2 - 1).contiguous(
        memory_format=torch.channels_last)  # as ibsr.photos.mask_model feeds torch
    single = [("call", 1), ("call", 2)]
    many = [("call", 1), ("items", 1), ("call", 2), ("items", 2)]
    return [
        ("queries, 1 photo", "queries", model.query_encoder, photos[:1], 1, 1, single),
        (f"queries, {batch} photos", "queries", model.query_encoder, photos, 1, batch, many),
        (f"views, 1 shape ({c.views} views)", "views", model.rendering_encoder, views[:c.views], c.views, 1, single),
        (f"views, {shapes} shapes", "views", model.rendering_encoder, views, c.views, shapes, many),
        ("mask, 1 photo", "mask", mask, rgb, 1, 1, [("call", 1)]),
    ]


def accuracy(model, photos, views, variants: dict) -> list[dict]:
    """Each variant in one encoder (the other torch float32) against torch float32 throughout."""
    ref_q, ref_v = variants["queries"]["torch float32"](photos), embed_views(variants["views"]["torch float32"], views)
    ref = attention_scores(ref_q, model.attend(ref_q).float(), ref_v.half())  # views as the index stores them
    rows = []
    for side in ("queries", "views"):
        for name, variant in variants[side].items():
            if name == "torch float32" or (side == "views" and name == "torch bf16"):
                continue
            q = variant(photos) if side == "queries" else ref_q
            v = embed_views(variant, views) if side == "views" else ref_v
            s = attention_scores(q, model.attend(q).float(), v.half())
            cos = (q * ref_q).sum(-1) if side == "queries" else (v * ref_v).sum(-1)
            rows.append({"variant": name, "in": side, "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                         "max_abs_score_diff": float((s - ref).abs().max()), "photos": len(s),
                         "top1_unchanged": int((s.argmax(1) == ref.argmax(1)).sum()), "top5_overlap": top_overlap(s, ref, 5)})
    return rows


def embed_views(variant: Variant, views: torch.Tensor) -> torch.Tensor:
    n, v = views.shape[:2]
    return torch.nn.functional.normalize(variant(views.flatten(0, 1)), dim=-1).reshape(n, v, -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=3.0, help="stop repeating a cell after this long")
    parser.add_argument("--batch", type=int, default=8, help="photos per batch")
    parser.add_argument("--shapes", type=int, default=4, help="shapes per batch of views")
    parser.add_argument("--accuracy-shapes", type=int, default=2, help="generated shapes per furniture category")
    parser.add_argument("--int8-anyway", action="store_true", help="time int8 even where it changes a top-1")
    parser.add_argument("--no-busy", action="store_true", help="skip the cells with a competing process")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, mask = load_default_model(), mask_model.load_mask_model(required=True)  # channels_last, as ibsr runs it
    names = ("torch float32", "torch bf16", "onnx float32", "onnx int8", "openvino float32")
    c = model.config
    variants = {comp: make_variants(names + extra, mod, comp, shape) for comp, mod, shape, extra in (
        ("queries", model.query_encoder, (4, c.query_size, c.query_size), ("onnx int8 static",)),
        ("views", model.rendering_encoder, (1, c.render_size, c.render_size), ()))}
    variants["mask"] = make_variants(("torch float32", "onnx float32", "onnx int8 static", "openvino float32"), mask, "mask",
                                     (3, mask.config.size, mask.config.size))
    acc = accuracy(model, *generated_inputs(model, args.accuracy_shapes), variants)
    int8_ok = all(r["top1_unchanged"] == r["photos"] for r in acc if r["variant"] == "onnx int8")
    cpu, flags = cpu_model(), cpu_flags()
    print(f"cpu: {cpu}; flags: {', '.join(flags)}; torch {torch.__version__}; "
          f"onnxruntime {__import__('onnxruntime').__version__}; usable CPUs {cpus.usable_cpus()}")
    print(f"\n{'variant':<14} {'in':<8} {'cosine min':>10} {'mean':>9} {'max |score diff|':>17} {'top-1 same':>11} "
          f"{'top-5 overlap':>14}")
    for r in acc:
        print(f"{r['variant']:<14} {r['in']:<8} {r['cosine_min']:>10.5f} {r['cosine_mean']:>9.6f} "
              f"{r['max_abs_score_diff']:>17.4f} {r['top1_unchanged']:>5}/{r['photos']:<5} {r['top5_overlap']:>14.3f}")
    rows = []
    for name, comp, _, x, item, units, modes in workloads(model, mask, args.batch, args.shapes):
        for busy in (False,) if args.no_busy else (False, True):
            with competing_process(busy):
                load = os.getloadavg()[0]
                for vname, variant in variants[comp].items():
                    if vname == "onnx int8" and not (int8_ok or args.int8_anyway):
                        continue
                    for mode, threads in modes:
                        ms, best = timed_ms(run_mode(variant, x, item, mode, threads), args.repeat, args.max_seconds)
                        rows.append({"workload": name, "variant": vname, "mode": mode, "threads": threads, "busy": busy,
                                     "ms_per_unit": ms / units, "min_ms_per_unit": best / units, "load_avg": load})
                        how = f"{mode}, {threads} {'workers' if mode == 'items' else 'threads'}"
                        print(f"{name:<26} {vname:<14} {how:<18} {'busy' if busy else 'quiet':<6} {ms / units:8.1f} "
                              f"ms/unit (min {best / units:7.1f}; load {load:.1f})", flush=True)
    cpus.set_torch_workers(None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"cpu": cpu, "flags": flags, "torch": torch.__version__, "args": vars(args) | {"json": str(args.json)},
                   "int8_top1_holds": int8_ok, "accuracy": acc, "speed": rows}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
