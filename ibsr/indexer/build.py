"""Build or update an index from a catalog: discover -> render -> encode -> write.

Rendering (CPU, per mesh) runs in worker processes; encoding runs batched in this process;
each encoded batch is one LanceDB commit. A rerun skips shapes whose mesh hash is already
indexed, so a killed build resumes where it stopped.

A build holds the index's write lock from its first write to its last (`ibsr.index.lock`), so two
builds of one index run one after the other. Every build removes shapes that appear more
than once (left by builds of older ibsr versions that ran concurrently) and re-indexes them;
`repair=True` first runs every check of `ibsr-index verify` and removes what it flags.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ibsr.cpus import process_pool
from ibsr.errors import IbsrError
from ibsr.geometry.mesh import UP_AXES, file_hash
from ibsr.geometry.render import DEFAULT_RIG
from ibsr.indexer.build_steps import encode_views, record_failure
from ibsr.index.layout import DAMAGED_DIR, DATA_ENTRIES, INDEX_ENTRIES, IndexMeta, holds_index_data
from ibsr.index.lock import IndexWriteLock
from ibsr.index.writer import IndexWriter
from ibsr.indexer.discover import CatalogEntry, catalog_root, discover
from ibsr.geometry.mesh import UP_AXES, file_hash
from ibsr.geometry.render import DEFAULT_RIG
from ibsr.indexer.render_job import RenderJob, render_shape
from ibsr.model import checkpoint_id, load_checkpoint, default_weights_path, rendering_id


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
    flat: dict | None = None  # set when the flat sidecar was (re)written
    duplicates_removed: int = 0  # shapes found more than once, removed and re-indexed
    repair: dict | None = None  # what --repair found and did
    took_over: str | None = None  # the dead writer whose lock this build took over

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
                         up_axis=self.up_axis, rendering_id=rendering_id(self.model))

    def build(self, catalog: Path, strict: bool = False, prune: bool = False, progress: bool = True,
              faiss_factory: str | None = None, ray: str | None = None, wait: bool = True,
              repair: bool = False) -> BuildReport:
        """ray: None builds in this process (+ render workers); an address ("local", "auto",
        "ray://host:10001") renders and encodes on Ray instead (`indexer/ray_backend.py`).
        wait: False fails at once if another writer holds the index. repair: verify first and
        remove whatever is damaged, so the build brings the index back to a clean build's."""
        started = time.perf_counter()
        entries = discover(Path(catalog))
        self.meta = replace(self.meta, catalog_root=catalog_root(catalog))
        self._check_target()  # before the lock writes anything into the directory
        with IndexWriteLock(self.index_dir, wait=wait) as lock:
            report = BuildReport(index=str(self.index_dir), catalog_shapes=len(entries))
            report.took_over = lock.took_over.describe() if lock.took_over else None
            if repair:
                report.repair = self._repair(progress)
            self._check_compatible()
            writer = IndexWriter(self.index_dir, self.meta)
            todo = self._changed(entries, writer, report, prune)
            if ray is None:
                self._index(todo, writer, report, strict, progress)
            else:
                from ibsr.indexer.ray_backend import index_with_ray
                index_with_ray(self, todo, writer, report, strict, progress, address=ray)
            self._finish(writer, report, faiss_factory)
        if report.repair:
            report.repair["shapes_removed"] = len(report.repair["shapes_removed"])
        report.wall_seconds = time.perf_counter() - started
        return report

    def _finish(self, writer: IndexWriter, report: BuildReport, faiss_factory: str | None) -> None:
        """Compact if anything changed; rewrite the flat sidecar and the prefilter if stale, asked
        for or damaged (both are derived from the table version the compaction leaves)."""
        changed = bool(report.indexed or report.pruned or report.duplicates_removed or
                       (report.repair and report.repair["shapes_removed"]))
        if changed:
            writer.compact()
        if not writer.table.count_rows():
            return
        repair = report.repair or {}
        written = writer.refresh_derived(faiss_factory, rewrite_flat=changed or bool(repair.get("rebuild_flat")),
                                         rewrite_faiss=changed or bool(repair.get("rebuild_prefilter")))
        report.flat, report.faiss = written["flat"], written["faiss"]

    def _check_target(self) -> None:
        """Refuse a directory holding anything but an ibsr index, before writing into it."""
        if not self.index_dir.is_dir():
            return
        foreign = [p.name for p in self.index_dir.iterdir()
                   if p.name not in INDEX_ENTRIES and not p.name.endswith(".tmp")]
        if foreign:
            raise IbsrError(f"exists and is not an ibsr index (it holds {foreign[0]!r}); choose an empty or new "
                            "--index directory", self.index_dir)

    def _repair(self, progress: bool) -> dict:
        """Verify; set aside a table or metadata that cannot be trusted; name the damaged shapes."""
        from ibsr.index.verify import verify_index

        new = not holds_index_data(self.index_dir)
        found = None if new else verify_index(self.index_dir, progress=progress)
        repair = {"problems": dict(found.counts) if found else {}, "moved_aside": None, "shapes_removed": [],
                  "rebuild_prefilter": bool(found and found.counts["prefilter"]),
                  "rebuild_flat": bool(found and found.counts["flat"])}
        if found is None or found.healthy:
            return repair
        if not found.needs_rebuild and found.bad_shape_ids():
            try:  # the build re-indexes the removed shapes from the catalog
                IndexWriter(self.index_dir, IndexMeta.read(self.index_dir)).delete(sorted(found.bad_shape_ids()))
                repair["shapes_removed"] = sorted(found.bad_shape_ids())
                return repair
            except IbsrError:  # even deleting fails: the table's files are damaged beyond its rows
                pass
        if found.needs_rebuild or found.bad_shape_ids():
            repair["moved_aside"] = str(self._move_aside())
        return repair

    def _move_aside(self) -> Path:
        """Move the metadata, table, prefilter and sidecar to damaged/<time>/: the build starts afresh."""
        target = self.index_dir / DAMAGED_DIR / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target.mkdir(parents=True)
        for name in DATA_ENTRIES:
            if (self.index_dir / name).exists():
                (self.index_dir / name).rename(target / name)
        return target

    def _check_compatible(self) -> None:
        """Refuse to mix shapes from another encoder, rig or up axis into one index."""
        try:
            existing = IndexMeta.read(self.index_dir)
        except IbsrError as exc:
            if holds_index_data(self.index_dir):
                raise IbsrError(f"{exc.message.split(';')[0]}; `ibsr-index build CATALOG --repair` rebuilds it "
                                "(the damaged files are kept aside)", exc.path or self.index_dir) from None
            self.meta.write(self.index_dir)
            return
        for key in ("encoder_id", "views", "render_size", "rig", "embed_dim", "up_axis"):
            if getattr(existing, key) != getattr(self.meta, key):
                raise IbsrError(
                    f"index was built with {key}={getattr(existing, key)!r}, this build uses "
                    f"{getattr(self.meta, key)!r}; use another --index directory (or delete this one)",
                    self.index_dir)
        if existing.catalog_root != self.meta.catalog_root:  # what ibsr-serve shows paths relative to
            replace(existing, catalog_root=self.meta.catalog_root).write(self.index_dir)

    def _changed(self, entries, writer, report: BuildReport, prune) -> list[tuple]:
        indexed = self._without_duplicates(writer, report)
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

    @staticmethod
    def _without_duplicates(writer, report: BuildReport) -> dict[str, str]:
        """{shape_id: mesh_hash}; shapes stored more than once are deleted (and so re-indexed)."""
        ids, hashes = writer.indexed_rows()
        duplicated = sorted(shape_id for shape_id, n in Counter(ids).items() if n > 1)
        if duplicated:
            writer.delete(duplicated)
            report.duplicates_removed = len(duplicated)
        gone = set(duplicated)
        return {shape_id: digest for shape_id, digest in zip(ids, hashes) if shape_id not in gone}

    def _index(self, todo: list[tuple[CatalogEntry, str]], writer, report, strict, progress) -> None:
        jobs = [RenderJob(e.shape_id, e.category, str(e.path), digest, self.up_axis, self.meta.render_size)
                for e, digest in todo]
        bar = tqdm(total=len(jobs), unit="shape", desc="indexing", disable=not progress, file=sys.stderr)
        batch: list[dict] = []
        with process_pool(self.workers) as pool:
            rendered = _bounded_map(pool, render_shape, jobs, window=4 * self.batch_size)
            for result in rendered:
                bar.update(1)
                if "error" in result:
                    record_failure(result, report, strict, bar)
                    continue
                report.render_seconds += result.pop("render_seconds")
                batch.append(result)
                if len(batch) >= self.batch_size:
                    self._write(batch, writer, report)
                    batch = []
            if batch:
                self._write(batch, writer, report)
        bar.close()

    def _write(self, batch: list[dict], writer: IndexWriter, report: BuildReport) -> None:
        t0 = time.perf_counter()
        embeddings = self.encode_views(np.stack([r["views"] for r in batch]))
        t1 = time.perf_counter()
        writer.add([r["shape"] for r in batch], embeddings)
        report.encode_seconds += t1 - t0
        report.write_seconds += time.perf_counter() - t1
        report.indexed += len(batch)

    def encode_views(self, views: np.ndarray) -> np.ndarray:
        """N x V x S x S uint8 gray renderings -> N x V x D float32 normalized embeddings."""
        return encode_views(self.model, self.device, views)


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
