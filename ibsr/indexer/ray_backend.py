"""The index build on Ray (`ibsr-index build CATALOG --ray [ADDRESS]`): the same index, more machines.

    ibsr-index build catalog/ --ray                    # start Ray on this machine for the build
    ibsr-index build catalog/ --ray auto               # the cluster that `ray start --head` runs here
    ibsr-index build catalog/ --ray ray://head:10001   # a remote cluster (Ray client)

`Indexer.build` does discovery, the incremental check (`_changed`), compaction and the FAISS
rebuild exactly as without Ray; only the render + encode + write loop (`Indexer._index`)
is replaced by a Ray Data pipeline:

    from_items(render jobs) -> map(render)           CPU tasks, one shape per row (render_job.py)
                            -> map_batches(encoder)  actor pool holding the model: one GPU per
                                                     actor when the cluster has GPUs, else CPU
                            -> iter_batches          the driver commits each batch of
                                                     --batch-size shapes with IndexWriter.add

Writing from the driver keeps LanceDB single-writer and keeps the crash-safety of the local
build: one merge-insert on shape_id per batch = one atomic commit, so a killed build rerun
neither loses nor duplicates shapes. Ray retries a task or restarts an actor whose worker
died (Ray Data's defaults: tasks and actor calls are retried without limit). Rows come back
in catalog order (`preserve_order`), so the table has the rows in the same order as a local
build. A mesh that fails to load or render travels through the pipeline as an error row and
is reported (or fatal with --strict) exactly as in the local build.

Every node needs ibsr installed (`pip install ibsr[ray]`) and must read the catalog files at
the paths the driver sees (a shared file system); the model weights are shipped to the
encoder actors from the driver, so they need no copy of the checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, fields

import numpy as np

from ibsr.index.layout import ShapeEntry
from ibsr.ray_cluster import (LOCAL, TASK_MEMORY, cluster_cpus, encoder_pool, from_items, load_model, model_payload,
                              ordered_pipeline, ray_session)


class ShapeEncoder:
    """Ray Data actor: holds the model, turns rendered views into view embeddings.

    Input batch: the render rows (views N x V x S x S uint8, error "" for rendered shapes).
    Output: the same rows without `views`, with `embeddings` N x V x D float32 (zeros for
    error rows) and the batch's encode time spread over its rows.
    """

    def __init__(self, config: dict, state, device: str):
        import torch

        self.device = torch.device(device)
        self.model = load_model(config, state, device)

    def encode_views(self, views: np.ndarray) -> np.ndarray:
        """As the local build encodes (`build_steps.encode_views`): same numbers."""
        from ibsr.indexer.build_steps import encode_views

        return encode_views(self.model, self.device, views)

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        views = batch.pop("views")
        ok = np.asarray(batch["error"]) == ""
        if ok.any():
            encoded = self.encode_views(np.ascontiguousarray(views[ok]))
            embeddings = np.zeros((len(ok), *encoded.shape[1:]), np.float32)
            embeddings[ok] = encoded
        else:  # nothing rendered in this batch: keep the column's shape
            embeddings = np.zeros((len(ok), views.shape[1], self.model.config.embed_dim), np.float32)
        batch["embeddings"] = embeddings
        batch["encode_seconds"] = np.full(len(ok), (time.perf_counter() - started) / len(ok))
        return batch


def render_row(job: dict, views: int, size: int) -> dict:
    """`render_shape` as a Ray Data row: the `ShapeEntry`'s fields as columns, and every row has
    the same columns (errors included)."""
    from ibsr.indexer.render_job import RenderJob, render_shape

    result = render_shape(RenderJob(**job))
    error = result.get("error", "")
    shape = ShapeEntry(job["shape_id"], job["category"], job["path"], job["mesh_hash"], b"") if error \
        else result["shape"]
    return {
        **asdict(shape), "path": job["path"], "error": error,
        "views": np.zeros((views, size, size), np.uint8) if error else result["views"],
        "render_seconds": 0.0 if error else result["render_seconds"],
    }


def shape_of(batch: dict, i: int) -> ShapeEntry:
    """Row i of a Ray batch as the writer's `ShapeEntry` (Ray hands numpy strings and bytes back)."""
    return ShapeEntry(**{f.name: (bytes if f.type == "bytes" else str)(batch[f.name][i]) for f in fields(ShapeEntry)})


def index_with_ray(indexer, todo: list, writer, report, strict: bool, progress: bool,
                   address: str | None = LOCAL, encoders: int | None = None) -> None:
    """Render, encode and commit the shapes of `todo` ((CatalogEntry, mesh hash) pairs) on Ray.

    `indexer` is the calling `Indexer` (its model, meta and batch size),
    `writer`/`report` are the build's. encoders: size of the encoder actor pool (default: one
    per GPU of the cluster, else one per CPU_ENCODERS_PER_CPUS CPUs).
    """
    from tqdm import tqdm

    from ibsr.indexer.build_steps import record_failure

    if not todo:
        return
    meta, batch_size = indexer.meta, indexer.batch_size
    jobs = [{"shape_id": e.shape_id, "category": e.category, "path": str(e.path), "mesh_hash": digest,
             "up_axis": indexer.up_axis, "size": meta.render_size} for e, digest in todo]
    with ray_session(address) as ray, ordered_pipeline(ray):
        dataset = _pipeline(ray, indexer, jobs, encoders)
        bar = tqdm(total=len(jobs), unit="shape", desc="indexing (ray)", disable=not progress, file=sys.stderr)
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            shapes, embeddings = [], []
            for i in range(len(batch["shape_id"])):
                bar.update(1)
                if batch["error"][i]:
                    record_failure({"path": str(batch["path"][i]), "error": str(batch["error"][i])}, report, strict, bar)
                    continue
                report.render_seconds += float(batch["render_seconds"][i])
                report.encode_seconds += float(batch["encode_seconds"][i])
                shapes.append(shape_of(batch, i))
                embeddings.append(batch["embeddings"][i])
            if shapes:  # one LanceDB commit per batch, from this process only
                started = time.perf_counter()
                writer.add(shapes, np.stack(embeddings).astype(np.float32))
                report.write_seconds += time.perf_counter() - started
                report.indexed += len(shapes)
        bar.close()


def _pipeline(ray, indexer, jobs: list[dict], encoders: int | None):
    pool = encoder_pool(ray, indexer.device, encoders)
    per_block = max(1, min(indexer.batch_size, math.ceil(len(jobs) / (4 * cluster_cpus(ray)))))  # spread renders
    dataset = from_items(ray, jobs, math.ceil(len(jobs) / per_block))
    dataset = dataset.map(render_row, fn_kwargs={"views": indexer.meta.views, "size": indexer.meta.render_size},
                          num_cpus=1, memory=TASK_MEMORY)
    return dataset.map_batches(
        ShapeEncoder, batch_size=indexer.batch_size, batch_format="numpy",
        fn_constructor_kwargs={**model_payload(ray, indexer.model), "device": pool["device"]},
        compute=pool["compute"], num_gpus=pool["num_gpus"], num_cpus=pool["num_cpus"])


__all__ = ["ShapeEncoder", "index_with_ray", "render_row", "shape_of"]
