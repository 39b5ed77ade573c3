"""Benchmark the rerank (ibsr.kernels) against a port of the official evaluation loop.

Synthetic L2-normalized view embeddings (V=12, D=128, float16 storage; generated in float32
chunks and cast, so memory stays bounded at N = 1M, ~3 GB) and queries. Variants:

  naive       the official evaluation loop, one query at a time: repeat the query over all N
              shapes, attention logits by torch.bmm((N x V x D), (N x D x 1)), softmax over
              views, cosines by a second bmm, weighted sum; then top-k. It reads float32 views
              (converted once, outside the timing) when N x V x D float32 fits in
              --naive-f32-max-gb, else it converts chunks of 65536 shapes per query (noted in
              the output). The official loop has no chunking at all.
  torch       ibsr.kernels.torch_path.rerank on the views' device (CPU, or CUDA if available);
              on a CPU its chunks run on the pool of single-threaded workers (ibsr.cpus)
  triton      ibsr.kernels.triton_rerank.rerank_triton (CUDA only)
  naive-cuda  the naive loop on CUDA

Each cell times `rerank(..., k)` for a batch of B queries (--repeat runs after one warm-up,
fewer if --max-seconds is exceeded; the minimum and median are reported). On CUDA the table
also reports the views bytes read per ms as GB/s next to a device-to-device copy of the views
tensor measured in the same run (copy GB/s = 2 x bytes / time: read + write).

Example:
  python benchmarks/rerank.py --n 6778 100000 --b 1 64 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ibsr import cpus  # noqa: E402
from ibsr.kernels import torch_path  # noqa: E402

V, D = 12, 128


def make_views(N: int, device, seed=0, chunk=65536) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    views = torch.empty(N, V, D, dtype=torch.float16, device=device)
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        x = torch.nn.functional.normalize(torch.randn(n1 - n0, V, D, generator=g), dim=-1)
        views[n0:n1] = x.to(device=device, dtype=torch.float16)
    return views


def make_queries(B: int, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1)
    W = torch.randn(D, D, generator=g) / math.sqrt(D) * 3.0
    return q.to(device), (q @ W.T).contiguous().to(device)


class Naive:
    """The official evaluation loop, ported: one query at a time over all shapes."""

    def __init__(self, views: torch.Tensor, f32_max_gb: float, chunk=65536):
        f32_bytes = views.numel() * 4
        self.chunk = chunk
        self.note = ""
        if f32_bytes <= f32_max_gb * 2**30:
            self.views32 = views.float()
            self.views16 = None
        else:
            self.views32 = None
            self.views16 = views
            self.note = f"float32 views would take {f32_bytes / 2**30:.1f} GiB: converted per 65536-shape chunk"

    def _scores_one(self, q1, wq1, v32):
        N = v32.shape[0]
        qq = q1.unsqueeze(0).repeat(N, 1)  # N x D, as the official loop does
        ww = wq1.unsqueeze(0).repeat(N, 1)
        a = torch.bmm(v32, ww.unsqueeze(2)).squeeze(2)  # N x V
        w = torch.softmax(a, dim=1)
        c = torch.bmm(v32, qq.unsqueeze(2)).squeeze(2)  # N x V
        return (w * c).sum(dim=1)

    def __call__(self, q, wq, k):
        out_s, out_i = [], []
        for b in range(q.shape[0]):
            if self.views32 is not None:
                s = self._scores_one(q[b], wq[b], self.views32)
            else:
                s = torch.cat(
                    [
                        self._scores_one(q[b], wq[b], self.views16[n0 : n0 + self.chunk].float())
                        for n0 in range(0, self.views16.shape[0], self.chunk)
                    ]
                )
            v, i = s.topk(k)
            out_s.append(v)
            out_i.append(i)
        return torch.stack(out_s), torch.stack(out_i)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, device, repeat, max_seconds):
    t0 = time.perf_counter()
    fn()  # warm-up (compilation, allocator)
    sync(device)
    warm = time.perf_counter() - t0
    times = []
    budget_end = time.perf_counter() + max_seconds
    for _ in range(repeat):
        if times and time.perf_counter() + warm > budget_end:
            break
        s = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - s)
    if not times:
        times = [warm]
    return min(times) * 1e3, statistics.median(times) * 1e3, len(times)


def copy_gbps(views):
    dst = torch.empty_like(views)
    dst.copy_(views)
    torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        s = time.perf_counter()
        dst.copy_(views)
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - s)
    del dst
    return 2 * views.numel() * views.element_size() / min(ts) / 1e9


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[6778, 100000, 1000000], help="catalog sizes (shapes)")
    p.add_argument("--b", type=int, nargs="+", default=[1, 64, 256], help="query batch sizes")
    p.add_argument("--k", type=int, default=10, help="top-k per query")
    p.add_argument(
        "--variants", nargs="+", default=["naive", "torch", "triton", "torch-cuda", "naive-cuda"],
        help="naive, torch (CPU), triton, torch-cuda, naive-cuda; CUDA variants are skipped without CUDA",
    )
    p.add_argument("--repeat", type=int, default=5, help="timed runs per cell (after one warm-up)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="stop repeating a cell after this long")
    p.add_argument("--skip-naive-above", type=int, default=100000, help="skip naive cells with N above this")
    p.add_argument("--naive-f32-max-gb", type=float, default=2.0, help="naive keeps float32 views up to this size")
    p.add_argument("--skip", nargs="*", default=[], help="cells to skip, as variant:N:B")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    has_cuda = torch.cuda.is_available()
    cpu, cuda = torch.device("cpu"), torch.device("cuda") if has_cuda else None
    rows = []
    meta = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # the naive loop's (one OpenMP team)
        "torch_pool_workers": cpus.torch_workers(),  # the torch path's single-threaded workers (issue 12)
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if has_cuda else None,
        "V": V, "D": D, "k": args.k, "views_dtype": "float16",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    print(f"# cpu: {meta['cpu']} ({meta['cpu_count']} cores, {meta['torch_threads']} torch threads); gpu: {meta['gpu']}")
    for N in args.n:
        views_cpu = make_views(N, cpu)
        views_gpu = views_cpu.to(cuda) if has_cuda else None
        copy = copy_gbps(views_gpu) if has_cuda else None
        naive_cpu = Naive(views_cpu, args.naive_f32_max_gb) if "naive" in args.variants and N <= args.skip_naive_above else None
        naive_gpu = Naive(views_gpu, 1e9) if has_cuda and "naive-cuda" in args.variants and N <= args.skip_naive_above else None
        for B in args.b:
            base = {}
            for variant in args.variants:
                if f"{variant}:{N}:{B}" in args.skip:
                    continue
                dev = cpu if variant in ("naive", "torch") else cuda
                if dev is None:
                    continue
                if variant.startswith("naive") and N > args.skip_naive_above:
                    continue
                q, wq = make_queries(B, dev)
                views = views_cpu if dev.type == "cpu" else views_gpu
                k = min(args.k, N)
                note = ""
                if variant == "naive":
                    torch.set_num_threads(meta["torch_threads"])  # the torch variant's pool leaves this thread at 1
                    fn, note = (lambda: naive_cpu(q, wq, k)), naive_cpu.note
                elif variant == "naive-cuda":
                    fn = lambda: naive_gpu(q, wq, k)  # noqa: E731
                elif variant in ("torch", "torch-cuda"):
                    fn = lambda: torch_path.rerank(q, wq, views, k)  # noqa: E731
                elif variant == "triton":
                    from ibsr.kernels.triton_rerank import rerank_triton

                    fn = lambda: rerank_triton(q, wq, views, k)  # noqa: E731
                else:
                    raise SystemExit(f"unknown variant {variant}")
                ms, med, runs = time_fn(fn, dev, args.repeat, args.max_seconds)
                row = {
                    "variant": variant, "N": N, "B": B, "ms": ms, "ms_median": med, "runs": runs,
                    "qps": B / ms * 1e3, "note": note,
                }
                if dev.type == "cuda":
                    row["views_gbps"] = views.numel() * views.element_size() / (ms / 1e3) / 1e9
                    row["copy_gbps"] = copy
                if variant.startswith("naive"):
                    base[dev.type] = ms
                rows.append(row)
                sp = base.get(dev.type)
                row["speedup_vs_naive"] = sp / ms if sp else None
                extra = f"  {row['views_gbps']:.0f} GB/s (copy {copy:.0f})" if dev.type == "cuda" else ""
                print(
                    f"{variant:11s} N={N:>8d} B={B:>4d}  {ms:10.2f} ms/batch (median {med:.2f}, {runs} runs)"
                    f"  {row['qps']:10.1f} q/s  speedup {row['speedup_vs_naive'] or float('nan'):6.1f}x{extra}"
                    + (f"  [{note}]" if note else ""),
                    flush=True,
                )
        del views_cpu, views_gpu, naive_cpu, naive_gpu

    print("\n| variant | N | B | ms/batch (min) | median | runs | queries/s | speedup vs naive |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        sp = f"{r['speedup_vs_naive']:.1f}x" if r["speedup_vs_naive"] else "n/a"
        print(f"| {r['variant']} | {r['N']} | {r['B']} | {r['ms']:.2f} | {r['ms_median']:.2f} | {r['runs']} | {r['qps']:.1f} | {sp} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
