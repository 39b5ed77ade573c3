"""`ibsr-eval --ray [ADDRESS]`: query photos decoded, masked and encoded on Ray workers.

    report = evaluate_with_ray(Searcher("ibsr_index"), read_queries("queries.jsonl"))

Pipeline (Ray Data, rows kept in query order):

    from_items(queries) -> map(decode + mask + crop)        CPU tasks (GrabCut is the costly part)
                        -> map_batches(query encoder)       actor pool holding the model (GPU
                                                            actors when the cluster has GPUs)
                        -> the driver reranks each batch with the Searcher (prefilter + exact
                           rerank over the index it holds), as `evaluate` does without Ray

`evaluate` itself runs unchanged: it is handed a `RayQueries` in place of the Searcher, whose
`load_queries` takes the next encoded rows from the Ray stream and whose `search_queries`
reranks them with the Searcher's own prefilter and rerank. Metrics, batching, `--strict`,
`--limit` and the unreadable-photo handling are therefore the same code as without Ray. In
the timings, `load_s` is the time the driver waited for encoded queries (decode + mask +
encode on the workers) and the `encode` stage is ~0.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ibsr.errors import IbsrError
from ibsr.eval.queries import EvalQuery, split_known
from ibsr.eval.run import evaluate
from ibsr.photos.box import Box
from ibsr.ray_cluster import (LOCAL, TASK_MEMORY, cluster_cpus, encoder_pool, from_items, load_model, model_payload,
                              ordered_pipeline, ray_session)
from ibsr.searcher.options import SearchOptions

ENCODE_BATCH = 32  # queries per encoder call (as Searcher.encode)


@dataclass
class EncodedQuery:
    """A query as the workers return it: what the Searcher's results read (path, mask
    source) plus its embedding q and attention key W q."""

    path: str
    mask_source: str
    q: np.ndarray  # D float32
    wq: np.ndarray  # D float32
    box: Box | None = None  # the box searched (load_query's checked box)


def evaluate_with_ray(searcher, queries: list[EvalQuery], address: str | None = LOCAL, batch_size: int = 64,
                      limit: int | None = None, encoders: int | None = None, **options):
    """`evaluate(searcher, queries, ...)` with query loading and encoding on Ray; same report.
    The encoder actors get the Searcher's model (config + weights through the object store)."""
    known, _ = split_known(queries, searcher.shapes.shape_ids)  # exactly the queries evaluate will load
    if limit is not None and limit >= 1:
        known = known[:limit]
    with ray_session(address) as ray, ordered_pipeline(ray):
        rows = _encoded_rows(ray, searcher, known, encoders)
        try:
            return evaluate(RayQueries(searcher, rows), queries, batch_size=batch_size, limit=limit, **options)
        finally:
            rows.close()  # end the Ray iteration while Ray is still up


class RayQueries:
    """Stands in for the Searcher inside `evaluate`: queries come from the Ray stream (in
    the order evaluate asks for them), ranking is the Searcher's."""

    def __init__(self, searcher, rows):
        self.searcher = searcher
        self.shapes, self.timings = searcher.shapes, searcher.timings
        self._rows = rows  # iterator of encoded rows, in query order
        self._ready: deque = deque()

    def __len__(self) -> int:
        return len(self.searcher)

    def load_queries(self, images: list, masks: list | None = None, boxes: list | None = None) -> list[EncodedQuery]:
        """The next len(images) encoded queries (their masks and boxes went to the workers with
        them). An unreadable photo raises IbsrError; for a batch, nothing is taken, so that
        evaluate can retry its queries one by one."""
        while len(self._ready) < len(images):
            self._ready.append(next(self._rows))
        rows = [self._ready[i] for i in range(len(images))]
        for image, row in zip(images, rows):
            if row["image"] != str(image):  # would be a bug: the stream is in evaluate's order
                raise RuntimeError(f"Ray query stream out of order: {row['image']} for {image}")
        errors = [row["error"] for row in rows if row["error"]]
        if errors and len(images) > 1:
            raise IbsrError(errors[0])
        for _ in rows:
            self._ready.popleft()
        if errors:
            raise IbsrError(errors[0])
        return [EncodedQuery(row["image"], row["mask_source"], row["q"], row["wq"], Box.parse(row["box"]) if row["box"]
                             else None) for row in rows]

    def search_queries(self, queries: list[EncodedQuery], options: SearchOptions | None = None, **settings):
        """Searcher.search_encoded on the embeddings the workers computed."""
        import torch

        q = torch.from_numpy(np.stack([x.q for x in queries]))
        wq = torch.from_numpy(np.stack([x.wq for x in queries]))
        return self.searcher.search_encoded(queries, q, wq, options, **settings)


def query_row(row: dict, size: int, mask_method: str = "auto", mask_weights: str | None = None) -> dict:
    """Decode, mask and crop one query photo (a Ray Data row); failures come back as data."""
    from ibsr.photos.query import load_query, query_tensor

    try:  # boxes travel as text: Ray Data columns take no None mixed with lists
        query = load_query(row["image"], row["mask"] or None, mask_method, mask_weights,
                           Box.parse(row["box"]) if row["box"] else None)
        x, source, error = query_tensor(query, size), query.mask_source, ""
        box = "" if query.box is None else str(query.box)
    except IbsrError as exc:
        x, source, error, box = np.zeros((4, size, size), np.float32), "", str(exc), ""
    return {"image": row["image"], "x": x, "mask_source": source, "box": box, "error": error}


class QueryEncoder:
    """Ray Data actor: query tensors -> q and W q (as Searcher.encode computes them)."""

    def __init__(self, config: dict, state, device: str):
        import torch

        self.device = torch.device(device)
        self.model = load_model(config, state, device)

    def __call__(self, batch: dict) -> dict:
        import torch

        from ibsr.model.inference import embed_queries  # Searcher.encode's precision and worker pool
        from ibsr.photos.query import calibration_inputs

        with torch.no_grad():
            x = torch.from_numpy(np.array(batch.pop("x"), dtype=np.float32)).to(self.device)  # a writable copy
            q = embed_queries(self.model, x, calibration=lambda: calibration_inputs(x.shape[-1]))
            wq = self.model.attend(q).float()
        batch["q"], batch["wq"] = q.cpu().numpy(), wq.cpu().numpy()
        return batch


def _encoded_rows(ray, searcher, known: list[EvalQuery], encoders: int | None):
    """Lazily: the encoded rows of `known`, in order (nothing runs before the first row is asked)."""
    if not known:
        return
    items = [{"image": str(q.image), "mask": "" if q.mask is None else str(q.mask),
              "box": "" if q.box is None else str(q.box)} for q in known]
    pool = encoder_pool(ray, searcher.device, encoders)
    blocks = min(len(items), max(math.ceil(len(items) / 8), 4 * cluster_cpus(ray)))  # <= 8 photos per decode task
    dataset = from_items(ray, items, blocks)
    weights = None if searcher.mask_weights is None else str(searcher.mask_weights)
    dataset = dataset.map(query_row, fn_kwargs={"size": searcher.model.config.query_size,
                                                "mask_method": searcher.mask_method, "mask_weights": weights},
                          num_cpus=1, memory=TASK_MEMORY)
    dataset = dataset.map_batches(
        QueryEncoder, batch_size=ENCODE_BATCH, batch_format="numpy",
        fn_constructor_kwargs={**model_payload(ray, searcher.model), "device": pool["device"]},
        compute=pool["compute"], num_gpus=pool["num_gpus"], num_cpus=pool["num_cpus"])
    for batch in dataset.iter_batches(batch_size=ENCODE_BATCH, batch_format="numpy"):
        for i in range(len(batch["image"])):
            yield {"image": str(batch["image"][i]), "mask_source": str(batch["mask_source"][i]),
                   "box": str(batch["box"][i]), "error": str(batch["error"][i]), "q": batch["q"][i],
                   "wq": batch["wq"][i]}
