"""ibsr-serve under load: requests/s and latency percentiles, batching on vs off, runtimes,
photos with and without mask files, time to first answer.

    python benchmarks/serve.py --work /tmp/ibsr-serve-bench --synthetic 100000 1000000 \
        --concurrency 1 8 32 --requests 96 --json benchmarks/out/serve.json
    python benchmarks/serve.py --work /tmp/ibsr-serve-rt --skip-real --shapes-per-category 1 \
        --synthetic 10000 --batching on --runtime torch onnx --photo-kinds masked plain \
        --concurrency 1 8 32 --requests 64 --rounds 1 --json benchmarks/out/serve_runtime.json

For each index (a real one built from generated shapes with the shipped model, and
synthetic-embedding indexes of the given sizes), starts `ibsr-serve` as a separate process
twice (batching on: the defaults; off: --max-batch 1; small indexes: both up at once, taking turns), measures
the time from process start to the first answered search, then sends `--requests` searches of
generated photos (with their mask files) from this process over loopback, `c` at a time, for
each concurrency `c`, `--rounds` times per server; the best round is reported (errors: all
rounds). Indexes of `--together-below` shapes or more get one server at a time (memory).
Indexes are kept in --work and reused by later runs.

`--runtime torch onnx`: one server per runtime (and batching mode), each started with
IBSR_RUNTIME set in its environment (`env`: inherited), all measured in the same run, taking
turns; the last column divides each cell's requests/s by the first runtime's (the baseline).
`--code before=DIR`: one more server per batching mode that runs the ibsr package in DIR (an
earlier commit, `git archive REV | tar -x -C DIR`) on the same index, first in the table and
the baseline of the last column ("today's code" measured in the same run).
`--photo-kinds real`: the photos of `--real-photos` (default ../shared/real_dev: real
photographs, loose crops of 100-600 px), read in place and sent without masks.
`--photo-kinds masked plain`: the photos sent with their mask files (`masked`) and without
(`plain`: the service computes the automatic mask, the mask network); each server gets both,
taking turns.

The synthetic indexes are written with ibsr's own writer (`IndexWriter.add`, then the flat
sidecar and the FAISS prefilter, as a build's end writes them: `refresh_derived`): per-category cluster centres plus noise for the view embeddings (so the
category prefilter behaves as on a real catalog: a query's nearest shapes agree on a few
categories), the shipped model's encoder id, and a real mesh as every shape's source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx2 as httpx
import numpy as np

from ibsr.eval import read_queries
from ibsr.geometry.render import montage
from ibsr.index.layout import META_FILE, ShapeEntry
from ibsr.index.table import ShapeReader
from ibsr.index.writer import IndexWriter
from ibsr.indexer import Indexer
from ibsr.serve import thread_budget, usable_cpus
from ibsr.synth import CATEGORIES, iter_shapes, write_catalog, write_queries

SYNTH_CHUNK = 50_000  # shapes per commit of the synthetic writer
MODES = {"on": [], "off": ["--max-batch", "1"]}  # batching: the defaults, or one request at a time
# masked / plain: the generated photos with their mask files, or without (the automatic mask);
# real: the photos of --real-photos (e.g. ../shared/real_dev, read in place), without masks
PHOTO_KINDS = ("masked", "plain", "real")


def build_real(root: Path, shapes_per_category: int, photos: int, seed: int) -> Path:
    index = root / "index"
    if (index / "faiss").is_dir():
        return index
    write_catalog(root, CATEGORIES, shapes_per_category, seed)
    per_category = max(1, photos // len(CATEGORIES))
    write_queries(root, list(iter_shapes(CATEGORIES, min(per_category, shapes_per_category), seed)), 1, seed)
    Indexer(index, workers=2).build(root / "catalog", progress=True)
    return index


def build_synthetic(index: Path, n: int, source_path: str, seed: int) -> Path:
    """n shapes of random clustered view embeddings, written like a build writes them."""
    if (index / "faiss").is_dir():
        with IndexWriter.existing(index) as writer:  # one written before this script wrote the sidecar gets one
            writer.refresh_derived()
        return index
    indexer = Indexer(index)  # the shipped model: its encoder id, views, dims, rig
    meta = indexer.meta
    if not (index / META_FILE).exists():
        meta.write(index)
    writer = IndexWriter(index, meta)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(CATEGORIES), meta.embed_dim)).astype(np.float32)
    thumbnail = cv2.imencode(".png", montage(np.full((meta.views, 64, 64), 255, np.uint8)))[1].tobytes()
    started = time.perf_counter()
    for start in range(len(writer.indexed_hashes()), n, SYNTH_CHUNK):
        count = min(SYNTH_CHUNK, n - start)
        cats = rng.integers(len(CATEGORIES), size=count)
        shape_noise = rng.standard_normal((count, 1, meta.embed_dim), dtype=np.float32)
        view_noise = rng.standard_normal((count, meta.views, meta.embed_dim), dtype=np.float32)
        views = centres[cats][:, None, :] + 0.8 * shape_noise + 0.5 * view_noise
        views /= np.linalg.norm(views, axis=2, keepdims=True)
        shapes = [ShapeEntry(f"{CATEGORIES[c]}/synthetic_{start + i:07d}", CATEGORIES[c], source_path,
                             f"synthetic-{start + i}", thumbnail) for i, c in enumerate(cats)]
        writer.add(shapes, views)
        print(f"  synthetic {n}: {start + count} shapes written ({time.perf_counter() - started:.0f} s)", flush=True)
    writer.compact()
    derived = writer.refresh_derived(rewrite_flat=True, rewrite_faiss=True)
    print(f"  synthetic {n}: prefilter {derived['faiss']} ({time.perf_counter() - started:.0f} s)", flush=True)
    return index


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`ibsr-serve` in its own process; records the time to its first answered search."""

    def __init__(self, index: Path, extra: list[str], request: dict, runtime: str | None = None,
                 code: Path | None = None):
        """code: a folder holding another version of the ibsr package (`git archive` of a
        commit), run instead of this checkout's."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if runtime is not None:
            env["IBSR_RUNTIME"] = runtime
        if code is not None:  # `python -m` puts its working folder first on sys.path: that tree's ibsr wins
            env["PYTHONPATH"] = str(code)
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ibsr.cli.serve", "--index", str(Path(index).resolve()), "--port", str(self.port),
             "--log-level", "warning", *extra], stderr=subprocess.PIPE, text=True, env=env, cwd=code)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ibsr-serve exited: {self.process.stderr.read()}")
            try:
                if httpx.post(self.url + "/search", timeout=600, **request).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        self.first_answer_s = time.perf_counter() - started

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=60)


def load(url: str, requests: list[dict], concurrency: int, total: int) -> dict:
    """`total` searches, `concurrency` at a time: asyncio tasks on one connection each, in one
    thread (32 client threads would fight over the GIL on the cores the server needs)."""
    return asyncio.run(_load(url, requests, concurrency, total))


async def _load(url: str, requests: list[dict], concurrency: int, total: int) -> dict:
    latencies, errors = [], []
    counter = iter(range(total))

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            for i in counter:  # shared: each index is taken by one task
                started = time.perf_counter()
                try:
                    response = await http.post("/search", **requests[i % len(requests)])
                except httpx.TransportError as e:  # a timeout or a dropped connection: an error, not a crash
                    errors.append(type(e).__name__)
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(response.status_code)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": total, "errors": len(errors), "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2),
            **{f"p{p}_ms": round(float(np.percentile(ms, p)), 1) if len(ms) else None for p in (50, 95, 99)}}


def photo_requests(root: Path, topk: int, masked: bool = True) -> list[dict]:
    """One search request per generated photo; masked: with its mask file, else the photo alone."""
    requests = []
    for query in read_queries(root / "queries.jsonl"):
        files = {"image": (Path(query.image).name, Path(query.image).read_bytes())}
        if masked:
            files["mask"] = ("mask.png", Path(query.mask).read_bytes())
        requests.append({"files": files, "data": {"topk": str(topk)}})
    return requests


def real_photo_requests(root: Path, topk: int) -> list[dict]:
    """One search request per photo of real_dev's queries.jsonl (its `image` field), no mask."""
    if not (root / "queries.jsonl").is_file():
        sys.exit(f"--real-photos {root}: no queries.jsonl there; point it at real_dev (../shared/real_dev) "
                 "or leave out the photo kind real")
    lines = (root / "queries.jsonl").read_text().splitlines()
    images = [root / json.loads(line)["image"] for line in lines if line.strip()]
    return [{"files": {"image": (image.name, image.read_bytes())}, "data": {"topk": str(topk)}} for image in images]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ibsr-serve-bench"), help="indexes are kept here")
    parser.add_argument("--shapes-per-category", type=int, default=25, help="real index: generated shapes (x8)")
    parser.add_argument("--photos", type=int, default=32, help="generated query photos (with mask files)")
    parser.add_argument("--photo-kinds", nargs="+", choices=PHOTO_KINDS, default=["masked"],
                        help="send the generated photos with their mask files (masked) and/or without (plain: "
                             "automatic mask), and/or the --real-photos without masks (real)")
    parser.add_argument("--real-photos", type=Path, default=Path("../shared/real_dev"),
                        help="photo kind real: a folder with a queries.jsonl of photos (real_dev's, read in place)")
    parser.add_argument("--runtime", nargs="+", choices=("env", "auto", "torch", "onnx"), default=["env"],
                        help="one server per runtime (IBSR_RUNTIME in its environment; env: inherited); "
                             "the first is the baseline of the last column")
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                        help="also serve with the ibsr package in DIR (e.g. `git archive` of an earlier commit), "
                             "labelled LABEL in the runtime column; repeatable. These servers come first: the "
                             "first is then the baseline of the last column")
    parser.add_argument("--batching", nargs="+", choices=tuple(MODES), default=list(MODES),
                        help="batching modes: on (the defaults), off (--max-batch 1)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[100_000], help="synthetic index sizes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="searches per concurrency level")
    parser.add_argument("--rounds", type=int, default=2, help="runs per cell (on and off take turns); best kept")
    parser.add_argument("--together-below", type=int, default=500_000,
                        help="indexes smaller than this: batching on and off servers up at once, taking turns")
    parser.add_argument("--off-first", action="store_true", help="start the batching-off server first")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic indexes")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    real_root = args.work / "real"
    real = build_real(real_root, args.shapes_per_category, args.photos, args.seed)
    requests = {kind: real_photo_requests(args.real_photos, args.topk) if kind == "real" else
                photo_requests(real_root, args.topk, kind == "masked") for kind in args.photo_kinds}
    source = str(sorted((real_root / "catalog" / "chair").iterdir())[0])
    indexes = [] if args.skip_real else [("real", real, ShapeReader(real).info()["shapes"])]
    indexes += [(f"synthetic {n:,}", build_synthetic(args.work / f"synthetic-{n}", n, source, args.seed), n)
                for n in args.synthetic]
    cpus = usable_cpus()
    meta = {"cpu": cpu_model(), "usable_cpus": cpus, "threads (torch, decode)": thread_budget(cpus),
            "load_average": os.getloadavg(), "photos": len(requests[args.photo_kinds[0]]),
            "command": " ".join(sys.argv), "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    print(f"# {meta}")
    rows = []
    codes = dict(code.split("=", 1) for code in args.code)
    variants = [*codes, *args.runtime]  # earlier code first (LABEL), then this checkout per runtime
    configs = [(mode, variant) for mode in args.batching for variant in variants]  # one server each
    print("| index | shapes | runtime | batching | photos | first answer (s) | concurrency | requests/s | p50 ms "
          "| p95 ms | p99 ms | errors | batches | load | on/off req/s | vs baseline req/s |")
    print("| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, index, shapes in indexes:
        # Small indexes: both servers stay up and take turns, so background load on a shared
        # machine hits both alike. Large ones: one server at a time (a 1M-shape server peaks
        # at ~11 GB while loading). Each cell is the best of --rounds runs.
        together = shapes < args.together_below
        cells, first_answer = {}, {}
        order = sorted(configs, key=lambda cfg: cfg[0] != "off") if args.off_first else configs
        for group in ([order] if together else [[cfg] for cfg in order]):
            servers = {}
            try:
                for mode, variant in group:
                    code = Path(codes[variant]).resolve() if variant in codes else None
                    env_runtime = None if variant in ("env", *codes) else variant
                    first = requests[args.photo_kinds[0]][0]
                    servers[(mode, variant)] = server = Server(index, MODES[mode], first, env_runtime, code)
                    first_answer[(mode, variant)] = round(server.first_answer_s, 2)
                    for kind in args.photo_kinds:
                        load(server.url, requests[kind], 2, 8)  # warm-up (and the mask network's first call)
                for c in args.concurrency:
                    for _ in range(args.rounds):
                        for kind in args.photo_kinds:
                            for cfg, server in servers.items():
                                before = server.health()["batches"]
                                result = load(server.url, requests[kind], c, args.requests)
                                result["batches"] = server.health()["batches"] - before
                                result["load_1min"] = round(os.getloadavg()[0], 2)
                                best = cells.get((*cfg, kind, c))
                                errors = result["errors"] + (best["errors"] if best else 0)  # of all rounds
                                if best is None or result["requests_per_s"] > best["requests_per_s"]:
                                    cells[(*cfg, kind, c)] = best = result
                                best["errors"] = errors
            finally:
                for server in servers.values():
                    server.stop()
        for kind in args.photo_kinds:
            for c in args.concurrency:
                for mode, runtime in configs:
                    cell = cells[(mode, runtime, kind, c)]
                    off = cells.get(("off", runtime, kind, c))
                    base = cells[(mode, variants[0], kind, c)]
                    on_off = cell["requests_per_s"] / off["requests_per_s"] if off and off["requests_per_s"] else None
                    vs_base = cell["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else None
                    row = {"index": name, "shapes": shapes, "runtime": runtime, "batching": mode, "photos": kind,
                           "first_answer_s": first_answer[(mode, runtime)], "servers_together": together, **cell,
                           "on_off_ratio": on_off and round(on_off, 2),
                           "vs_baseline_ratio": vs_base and round(vs_base, 2)}
                    rows.append(row)
                    print(f"| {name} | {shapes:,} | {runtime} | {mode} | {kind} | {row['first_answer_s']} | {c} "
                          f"| {row['requests_per_s']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} "
                          f"| {row['errors']} | {row['batches']} | {row['load_1min']} "
                          f"| {'' if on_off is None else f'{on_off:.2f}x'} "
                          f"| {'' if vs_base is None else f'{vs_base:.2f}x'} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
