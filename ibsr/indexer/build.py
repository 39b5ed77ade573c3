"""Build or update an index from a catalog: discover -> render -> encode -> write.

Rendering (CPU, per mesh) runs in worker processes; encoding runs batched in this process;
each encoded batch is one LanceDB commit. A rerun skips shapes whose mesh hash is already
indexed, so a killed build resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ibsr.errors import IbsrError
from ibsr.indexer.discover import CatalogEntry, discover
from ibsr.indexer.faiss_index import faiss_is_current, rebuild_faiss
from ibsr.indexer.mesh import UP_AXES, file_hash
from ibsr.indexer.render import DEFAULT_RIG
from ibsr.indexer.render_job import RenderJob, render_shape
from ibsr.indexer.store import ShapeWriter, make_rows
from ibsr.model import checkpoint_id, load_checkpoint, default_weights_path
from ibsr.schemas import IndexMeta


@dataclass
class BuildReport:
    index: str
    catalog_shapes: int
    indexed: int = 0
    unchanged: int = 0
    pruned: int = 0
    not_in_catalog: int = 0
    failed: list[dict] = field(default_factory=list)
    render_seconds: float = 0.0  # summed over render workers
    encode_seconds: float = 0.0
    write_seconds: float = 0.0
    wall_seconds: float = 0.0
    faiss: dict | None = None  # set when the prefilter was (re)built

    def rates(self) -> dict:
        per = lambda secs: round(self.indexed / secs, 2) if secs > 0 else None  # noqa: E731
        return {"render_shapes_per_s": per(self.render_seconds), "encode_shapes_per_s": per(self.encode_seconds),
                "overall_shapes_per_s": per(self.wall_seconds)}


class Indexer:
    """Index a catalog of 3D models into an ibsr index directory."""

    def __init__(self, index_dir: Path, weights: Path | None = None, up_axis: str = "y",
                 batch_size: int = 16, workers: int = 0, device: str | None = None):
        if up_axis not in UP_AXES:
            raise IbsrError(f"--up-axis must be one of {', '.join(UP_AXES)}, not {up_axis!r}")
        if batch_size < 1:
            raise IbsrError("--batch-size must be at least 1")
        self.index_dir = Path(index_dir)
        self.weights = Path(weights) if weights else default_weights_path()
        self.up_axis = up_axis
        self.batch_size = batch_size
        self.workers = workers
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_checkpoint(self.weights).to(self.device)
        self.encoder_id = checkpoint_id(self.weights)
        self.meta = self._meta()

    def _meta(self) -> IndexMeta:
        cfg = self.model.config
        return IndexMeta(encoder_id=self.encoder_id, model_config=cfg.to_dict(), views=cfg.views,
                         render_size=cfg.render_size, rig=DEFAULT_RIG.to_dict(), embed_dim=cfg.embed_dim,
                         up_axis=self.up_axis)

    def build(self, catalog: Path, strict: bool = False, prune: bool = False, progress: bool = True,
              faiss_factory: str | None = None, ray: str | None = None) -> BuildReport:
        """ray: None builds in this process (+ render workers); an address ("local", "auto",
        "ray://host:10001") renders and encodes on Ray instead (`indexer/ray_backend.py`)."""
        started = time.perf_counter()
        entries = discover(Path(catalog))
        self._check_compatible()
        writer = ShapeWriter(self.index_dir, self.meta)
        report = BuildReport(index=str(self.index_dir), catalog_shapes=len(entries))
        todo = self._changed(entries, writer.indexed_hashes(), report, writer, prune)
        if ray is None:
            self._index(todo, writer, report, strict, progress)
        else:
            from ibsr.indexer.ray_backend import index_with_ray
            index_with_ray(self, todo, writer, report, strict, progress, address=ray)
        if report.indexed or report.pruned:
            writer.compact()
        if writer.table.count_rows() and (report.indexed or report.pruned or faiss_factory
                                          or not faiss_is_current(self.index_dir)):
            report.faiss = rebuild_faiss(self.index_dir, faiss_factory)
        report.wall_seconds = time.perf_counter() - started
        return report

    def _check_compatible(self) -> None:
        """Refuse to mix shapes from another encoder, rig or up axis into one index."""
        try:
            existing = IndexMeta.read(self.index_dir)
        except IbsrError:
            if self.index_dir.exists() and any(self.index_dir.iterdir()):
                raise IbsrError("exists and is not an ibsr index; choose an empty or new --index directory",
                                self.index_dir) from None
            self.meta.write(self.index_dir)
            return
        for key in ("encoder_id", "views", "render_size", "rig", "embed_dim", "up_axis"):
            if getattr(existing, key) != getattr(self.meta, key):
                raise IbsrError(
                    f"index was built with {key}={getattr(existing, key)!r}, this build uses "
                    f"{getattr(self.meta, key)!r}; use another --index directory (or delete this one)",
                    self.index_dir)

    def _changed(self, entries, indexed: dict[str, str], report: BuildReport, writer, prune) -> list[tuple]:
        todo = []
        for entry in entries:
            try:
                digest = file_hash(entry.path)
            except OSError as exc:
                digest = f"unreadable:{exc.strerror}"  # render_shape reports it as a failure
            if indexed.get(entry.shape_id) == digest:
                report.unchanged += 1
            else:
                todo.append((entry, digest))
        stale = sorted(set(indexed) - {e.shape_id for e in entries})
        report.not_in_catalog = len(stale)
        if prune and stale:
            writer.delete(stale)
            report.pruned = len(stale)
        return todo

    def _index(self, todo: list[tuple[CatalogEntry, str]], writer, report, strict, progress) -> None:
        jobs = [RenderJob(e.shape_id, e.category, str(e.path), digest, self.up_axis, self.meta.render_size)
                for e, digest in todo]
        bar = tqdm(total=len(jobs), unit="shape", desc="indexing", disable=not progress, file=sys.stderr)
        batch: list[dict] = []
        with _render_pool(self.workers) as pool:
            rendered = _bounded_map(pool, render_shape, jobs, window=4 * self.batch_size)
            for result in rendered:
                bar.update(1)
                if "error" in result:
                    self._fail(result, report, strict, bar)
                    continue
                report.render_seconds += result.pop("render_seconds")
                batch.append(result)
                if len(batch) >= self.batch_size:
                    self._write(batch, writer, report)
                    batch = []
            if batch:
                self._write(batch, writer, report)
        bar.close()

    def _fail(self, result: dict, report: BuildReport, strict: bool, bar) -> None:
        if strict:
            raise IbsrError(f"{result['error']} (--strict stops at the first bad mesh)", result["path"])
        report.failed.append({"path": result["path"], "reason": result["error"]})
        bar.write(f"skipped {result['path']}: {result['error']}", file=sys.stderr)

    def _write(self, batch: list[dict], writer: ShapeWriter, report: BuildReport) -> None:
        t0 = time.perf_counter()
        embeddings = self.encode_views(np.stack([r.pop("views") for r in batch]))
        t1 = time.perf_counter()
        for r in batch:
            r["encoder_id"] = self.encoder_id
        writer.upsert(make_rows(writer.schema, batch, embeddings))
        report.encode_seconds += t1 - t0
        report.write_seconds += time.perf_counter() - t1
        report.indexed += len(batch)

    @torch.no_grad()
    def encode_views(self, views: np.ndarray) -> np.ndarray:
        """N x V x S x S uint8 gray renderings -> N x V x D float32 normalized embeddings."""
        x = torch.from_numpy(views).to(self.device, torch.float32).div_(127.5).sub_(1.0)
        return self.model.embed_views(x.unsqueeze(2)).float().cpu().numpy()


def _bounded_map(pool, fn, items, window: int):
    """Ordered map over a pool that keeps at most `window` results in flight (bounded memory)."""
    if pool is None:
        yield from map(fn, items)
        return
    pending = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _render_pool:
    """A process pool for rendering, or None (render in-process) when workers == 0."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 0:
            # forkserver: workers never inherit this process's torch threads or CUDA context.
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("forkserver"))
        return self.pool

    def __exit__(self, *exc):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)
