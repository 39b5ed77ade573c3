"""The search service behind the HTTP app: one loaded `Searcher`, batched requests, hot reload.

Threads (sized by `thread_budget` from the CPUs this process may use):
- request decoding (`load_query`: image decode, EXIF, mask or GrabCut) runs in a small pool
  (the mask network's own work goes to the torch pool);
- one worker thread owns torch: it drains the request queue, takes every request that
  arrives within `batch_wait_ms` of the first (up to `max_batch`) into one batch, encodes the
  batch in one encoder call and reranks it through `Searcher.search_encoded` (one rerank call
  per group of queries that share candidates);
- a watcher thread asks the served snapshot whether a newer version exists (cheap) and, when a
  build committed one, loads a new `Searcher` beside the served one and swaps the reference. The worker reads
  the reference once per batch, so every request is answered from exactly one version.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ibsr.cpus import set_torch_workers, usable_cpus  # affinity and cgroup quota: one place for it
from ibsr.errors import IbsrError
from ibsr.geometry.render import CameraRig
from ibsr.index.snapshot import IndexSnapshot
from ibsr.indexer.discover import catalog_relative
from ibsr.photos.query import Query
from ibsr.searcher import Searcher, SearchOptions

log = logging.getLogger("ibsr.serve")


class Overloaded(Exception):
    """More requests in flight than the queue holds: answered 503 with Retry-After."""


@dataclass(frozen=True)
class ServeConfig:
    index_dir: Path
    weights: Path | None = None
    device: str | None = None
    max_batch: int = 32  # requests searched together (1 = batching off)
    encode_batch: int | None = None  # photos per Searcher.encode call; None: 32 (see _encode)
    batch_wait_ms: float = 5.0  # how long the worker waits for more requests after the first
    queue_size: int = 64  # requests in flight (decoding, queued or searched) before 503
    max_upload_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 30.0  # per request: decode + queue + search
    reload_interval_s: float = 1.0  # how often the index is polled for a newer version (0 = never reload)
    torch_threads: int | None = None  # None: see thread_budget
    decode_threads: int | None = None
    api_key: str | None = field(default=None, repr=False)  # None: no key asked (security.py); never logged
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API; none: CORS closed


def thread_budget(cpus: int, torch_threads: int | None = None, decode_threads: int | None = None) -> tuple[int, int]:
    """(torch workers, decode threads) for a process that may use `cpus` cores.

    The torch pool (`ibsr.cpus.parallel_map`: single-threaded workers, and FAISS's threads) gets
    every core: its slots bound all the heavy work, the encoders, the rerank *and* the mask
    network, whose calls come from the decode threads (a single item runs in the calling thread
    while a slot is free, else in a worker). A decode thread's own work is light (image decode,
    resizes) and it waits on the pool for the mask, so there are two per core: enough masks
    queued that the pool never idles while requests wait to be decoded. With the pool sized to
    the cores minus the decode threads, a 2-core server ran the networks of every request on one
    worker (half the CPU idle; benchmarks/RESULTS.md, "Every core for the torch pool"). No
    OpenMP team is involved, so a decode thread that briefly shares a core with a worker costs
    time slices, not the stalls of "Thread cliffs and precision by CPU". GrabCut (no mask
    network installed) runs in the decode threads themselves."""
    return torch_threads or max(1, cpus), decode_threads or max(1, 2 * cpus)


@dataclass
class Served:
    """One loaded index version: everything a request reads comes from one of these."""

    searcher: Searcher
    rig: CameraRig
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> int:
        return self.searcher.shapes.version

    @cached_property
    def row_of(self) -> dict[str, int]:
        """shape_id -> snapshot row, for the shape pages (thumbnail, mesh). Built from the
        snapshot's own rows on first use, not at load: searches never need it, and at a million
        shapes it costs ~0.5 s of CPU and ~150 MB per loaded version."""
        ids = self.searcher.shapes.rows.column("shape_id").to_pylist()
        return {shape_id: row for row, shape_id in enumerate(ids)}

    @classmethod
    def load(cls, config: ServeConfig) -> "Served":
        snapshot = IndexSnapshot.open(config.index_dir)
        searcher = Searcher(snapshot, weights=config.weights, device=config.device)
        return cls(searcher, CameraRig.from_dict(searcher.meta.rig))


@dataclass
class _Job:
    query: Query
    options: SearchOptions
    future: Future  # -> (SearchResult, table version)


class SearchService:
    """Owns the served index, the torch worker, the decode pool and the reload watcher."""

    def __init__(self, config: ServeConfig):
        if config.max_batch < 1 or config.queue_size < 1:
            raise IbsrError("--max-batch and --queue-size must be at least 1")
        self.config = config
        self.torch_threads, self.decode_threads = thread_budget(usable_cpus(), config.torch_threads,
                                                                config.decode_threads)
        self.served = Served.load(config)
        self.decode_pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="ibsr-decode")
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=config.queue_size)
        self._in_flight = 0
        self._decoding = 0  # admitted requests whose photo is being decoded (the batch may wait for them)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "reloads": 0, "reload_error": None}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # each decode thread uses one core; OpenCV's own pool would oversubscribe
        self._stop.clear()
        self._threads = [threading.Thread(target=self._work, name="ibsr-torch", daemon=True)]
        if self.config.reload_interval_s > 0:
            self._threads.append(threading.Thread(target=self._watch, name="ibsr-reload", daemon=True))
        for thread in self._threads:
            thread.start()

    def prepare(self) -> float:
        """Run the networks once on a blank photo, the automatic mask included; returns seconds.

        A network's first use on a machine exports it to ONNX (and quantizes the mask network and
        the query encoder to int8 on CPUs with VNNI): ~60 s for both on a 2-core Zen 4, once per
        weights, then cached. Done before the server listens, that cost is not charged to the
        first request's --timeout."""
        from ibsr.photos.mask import automatic_mask

        started = time.perf_counter()
        searcher = self.served.searcher
        rgb = np.full((64, 64, 3), 128, np.uint8)
        mask, source = automatic_mask(rgb, searcher.mask_method, searcher.mask_weights)
        searcher.encode([Query("blank", rgb, mask, source)])
        return time.perf_counter() - started

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- admission

    def admit(self) -> "_Admission":
        """Context manager holding one of `queue_size` slots; raises Overloaded when none is free."""
        with self._lock:
            if self._in_flight >= self.config.queue_size:
                raise Overloaded()
            self._in_flight += 1
        return _Admission(self)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    async def decode(self, function, *args):
        """Run `function(*args)` (a photo's decoding) in the decode pool, counted in `_decoding`."""
        with self._lock:
            self._decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.decode_pool, function, *args)
        finally:
            with self._lock:
                self._decoding -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, query: Query, options: SearchOptions) -> Future:
        """Queue an admitted, decoded request; the future gives (SearchResult, table version)."""
        job = _Job(query, options, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:  # timed-out requests not drained yet still hold queue places
            raise Overloaded() from None
        return job.future

    # ---------------------------------------------------------------- the torch worker

    def _work(self) -> None:
        import faiss

        # torch work runs on the pool's single-threaded workers (ibsr.cpus.parallel_map: no OpenMP
        # team to stall when a core is taken); this thread's own small ops stay single-threaded too
        torch.set_num_threads(1)  # OpenMP settings are per thread: set them here
        set_torch_workers(self.torch_threads)
        faiss.omp_set_num_threads(self.torch_threads)
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._run_batch(self.served, batch)  # one version for the whole batch

    def _next_batch(self) -> list[_Job]:
        """The first waiting request plus those that join within batch_wait_ms, up to max_batch.

        It waits only while other admitted requests are still being decoded: a lone request
        (or the last of a burst) goes at once instead of paying the window for nothing."""
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.perf_counter() + self.config.batch_wait_ms / 1000
        while len(batch) < self.config.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                             if self._decoding > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return [job for job in batch if job.future.set_running_or_notify_cancel()]  # drop timed-out ones

    def _run_batch(self, served: Served, batch: list[_Job]) -> None:
        searcher = served.searcher
        live = []
        for job in batch:
            if job.options.topk > len(searcher):
                job.future.set_exception(IbsrError(
                    f"topk {job.options.topk} is larger than the index ({len(searcher)} shapes); "
                    f"ask for {len(searcher)} or fewer"))
            else:
                live.append(job)
        if not live:
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(live)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
        try:
            q, wq = self._encode(searcher, [job.query for job in live])
        except Exception as exc:  # noqa: BLE001 (a bug must fail these requests, not the worker)
            log.exception("encoding a batch failed")
            for job in live:
                job.future.set_exception(exc)
            return
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(live):
            groups.setdefault(job.options.group_key(), []).append(i)
        for members in groups.values():
            self._search_group(served, [live[i] for i in members], q[members], wq[members])

    def _encode(self, searcher: Searcher, queries: list[Query]):
        """q, W q of the batch, `encode_batch` photos per `Searcher.encode` call (default 32).

        On a CPU each call spreads its photos over the torch pool, one photo per work item (one
        photo per encoder call was fastest per photo: `ibsr.model.inference`); the embeddings do
        not depend on the batching. A GPU takes the whole call as one batch."""
        size = self.config.encode_batch or 32
        parts = [searcher.encode(queries[i:i + size]) for i in range(0, len(queries), size)]
        return torch.cat([q for q, _ in parts]), torch.cat([wq for _, wq in parts])

    def _search_group(self, served: Served, jobs: list[_Job], q, wq) -> None:
        topk = max(job.options.topk for job in jobs)
        try:
            results = served.searcher.search_encoded([job.query for job in jobs], q, wq, jobs[0].options, topk=topk)
        except Exception as exc:  # noqa: BLE001 (IbsrError: bad category etc.; anything else: a bug)
            if not isinstance(exc, IbsrError):
                log.exception("search failed")
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results):
            result.hits = result.hits[:job.options.topk]
            for hit in result.hits:  # never a server's folders in an answer: relative to the catalog root
                hit.source_path = catalog_relative(hit.source_path, served.searcher.meta.catalog_root)
            job.future.set_result((result, served.version))

    # ---------------------------------------------------------------- hot reload

    def _watch(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            self.poll()

    def poll(self) -> bool:
        """Reload if a build committed since the served version was loaded; True if it swapped."""
        if not self.served.searcher.shapes.newer_version_exists():
            return False
        return self.reload()

    def reload(self) -> bool:
        """Load the index's latest version beside the served one, then swap (one reference).

        What this promises (README, Serve, "Hot reload"): a version is served only once it is
        wholly loaded (its snapshot read or memory-mapped, its prefilter; its row map is built
        later from the snapshot's own rows), so a build's compaction deleting its files later
        changes no answer; a batch answers from the version it started with; a failed load
        leaves the served version, and what /health reports, as they were. The old version is
        freed when its last batch or request lets go of it: its mapped sidecar files are page
        cache shared with the new version's when they are the same files, never a second copy."""
        started = time.perf_counter()
        try:
            fresh = Served.load(self.config)
        except Exception as exc:  # noqa: BLE001 (keep serving the loaded version)
            # /health answers every client (with the key, if one is set): the message may name server paths
            self.stats["reload_error"] = f"{type(exc).__name__} at {time.strftime('%H:%M:%S')}; see the server log"
            log.warning("reload failed, still serving version %s: %s", self.served.version, exc)
            return False
        old, self.served = self.served, fresh
        self.stats["reloads"] += 1
        self.stats["reload_error"] = None
        log.info("serving table version %s (%d shapes, was %s), loaded in %.1f s", fresh.version,
                 len(fresh.searcher), old.version, time.perf_counter() - started)
        return True

    # ---------------------------------------------------------------- reporting

    @staticmethod
    def _networks(searcher: Searcher) -> dict:
        """What runs each network (`ibsr.runtime.describe`): results differ slightly between a CPU
        that runs the networks in int8 and one that runs them in float32."""
        from ibsr import runtime
        from ibsr.photos.mask_model import load_mask_model

        device = searcher.device.type
        uses_network = searcher.mask_method != "grabcut" and load_mask_model(searcher.mask_weights) is not None
        return {"queries": runtime.describe("queries", device_type=device),
                "mask": runtime.describe("mask", device_type=device) if uses_network else "grabcut"}

    def health(self) -> dict:
        served = self.served
        return {
            "status": "ok",
            "index": Path(self.config.index_dir).resolve().name,  # not its path on the server
            "shapes": len(served.searcher),
            "version": served.version,
            "encoder_id": served.searcher.meta.encoder_id,
            "device": str(served.searcher.device),
            "in_flight": self._in_flight,
            "queue_size": self.config.queue_size,
            "max_batch": self.config.max_batch,
            "networks": self._networks(served.searcher),
            "torch_threads": self.torch_threads,
            "decode_threads": self.decode_threads,
            **self.stats,
        }


class _Admission:
    def __init__(self, service: SearchService):
        self.service = service

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.service._release()

