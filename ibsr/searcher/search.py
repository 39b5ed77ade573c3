"""The Searcher: photos in, ranked catalog shapes out.

It searches one snapshot of an index (`ibsr.index.IndexSnapshot`: one pinned table version,
every shape's view embeddings mapped from the flat sidecar or read once from the table, the
FAISS prefilter), encodes queries in batches, asks the prefilter (`prefilter.py`) which shapes
each query's rerank should look at, and hands exact scoring to `ibsr.kernels` through one
narrow call (`rerank`), one call per group of queries that share a candidate set.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ibsr import kernels
from ibsr.errors import IbsrError
from ibsr.index.snapshot import IndexSnapshot
from ibsr.model import checkpoint_id, default_weights_path, load_checkpoint_with_info, rendering_id
from ibsr.model.inference import embed_queries
from ibsr.photos.mask import check_mask_method
from ibsr.photos.mask_model import load_mask_model
from ibsr.photos.query import Query, load_query, query_tensor
from ibsr.searcher.prefilter import CandidateGroup, Prefilter
from ibsr.searcher.pruned import pruned_rerank
from ibsr.searcher.results import Hit, SearchResult, html_section

ENCODE_BATCH = 32
DEFAULT_CANDIDATES = 1000  # --prefilter ann: shapes reranked per query
DEFAULT_NEIGHBORS = 10  # --prefilter category: nearest shapes that vote for categories
MIRROR = False  # off: no consistent gain for twice the encoding (benchmarks/RESULTS.md, "Mirror averaging")


def same_rendering_side(meta, model, info: dict) -> bool:
    """Whether `model` embeds views exactly as the encoder that built the index did, so the
    index's view embeddings stay valid for it (a query-side `ibsr-train adapt` checkpoint of
    the index's model). The index records its encoder's `rendering_id`; an index written
    before it did is matched through the checkpoint's `adapted_from` (its base's encoder id
    and rendering id, recorded by `ibsr-train adapt`; the rendering id is recomputed here, so
    a checkpoint whose rendering encoder moved is refused whatever its info says)."""
    rid = rendering_id(model)
    if meta.rendering_id:
        return rid == meta.rendering_id
    base = info.get("adapted_from") if isinstance(info.get("adapted_from"), dict) else {}
    return base.get("encoder_id") == meta.encoder_id and base.get("rendering_id") == rid


class Searcher:
    """Search one index with the model that built it."""

    def __init__(self, index: IndexSnapshot | str | os.PathLike, weights: Path | None = None,
                 device: str | None = None, mask_method: str = "auto", mask_weights: Path | None = None,
                 mirror: bool = MIRROR):
        """index: a snapshot, or an index directory opened into one (its latest version).
        mask_method / mask_weights: the automatic mask of photos without mask or alpha
        (`ibsr.photos.mask.automatic_mask`): "auto" (the mask network if installed, else
        GrabCut), "model" or "grabcut"; mask_weights replaces the shipped mask network.
        mirror: embed each photo and its mirror image and average the two (twice the encoding;
        off by default: it did not help the default model consistently)."""
        check_mask_method(mask_method)
        self.mask_method, self.mask_weights, self.mirror = mask_method, mask_weights, mirror
        if mask_method != "grabcut":  # a missing or bad mask network fails here, not at the first photo
            load_mask_model(mask_weights, required=mask_method == "model" or mask_weights is not None)
        self.shapes = index if isinstance(index, IndexSnapshot) else IndexSnapshot.open(Path(index))
        self.meta = self.shapes.meta
        weights = Path(weights) if weights else default_weights_path()
        self.model, info = load_checkpoint_with_info(weights)
        encoder = checkpoint_id(weights)
        if encoder != self.meta.encoder_id and not same_rendering_side(self.meta, self.model, info):
            raise IbsrError(
                f"index was built with encoder {self.meta.encoder_id}, the query model {weights} is {encoder}; "
                "pass the --weights the index was built with, or rebuild the index", self.shapes.index_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        # On a CPU the rerank reads the snapshot's own array (the sidecar's read-only map), never a
        # copy of it; a GPU gets its one copy, in its own memory.
        self.views = kernels.host_tensor(self.shapes.views).to(self.device)
        self.prefilter = Prefilter(self.shapes)
        self.timings: dict[str, float] = defaultdict(float)  # stage -> seconds, see _timed
        self.shapes_scored = 0  # shapes scored exactly, summed over queries (fraction: / (queries x len(self)))

    def __len__(self) -> int:
        return len(self.shapes)

    def search(self, images: list, masks: list | None = None, topk: int = 10, category: str | None = None,
               prefilter: str = "category", candidates: int = DEFAULT_CANDIDATES,
               neighbors: int = DEFAULT_NEIGHBORS, boxes: list | None = None) -> list[SearchResult]:
        """Rank the catalog for each image (a path or a `Query`); best first. boxes: a `Box` (or
        None) per image, the part of the photo that holds the object (`load_query`)."""
        queries = self.load_queries(images, masks, boxes)
        return self.search_queries(queries, topk, category, prefilter, candidates, neighbors)

    def load_queries(self, images: list, masks: list | None = None, boxes: list | None = None) -> list[Query]:
        masks = masks or [None] * len(images)
        boxes = boxes or [None] * len(images)
        if len(masks) != len(images):
            raise IbsrError(f"{len(masks)} masks for {len(images)} images; give one --mask per query or none")
        if len(boxes) != len(images):
            raise IbsrError(f"{len(boxes)} boxes for {len(images)} images; give one --box per query or none")
        with self._timed("load"):
            return [im if isinstance(im, Query) else load_query(im, m, self.mask_method, self.mask_weights, b)
                    for im, m, b in zip(images, masks, boxes)]

    def search_queries(self, queries: list[Query], topk: int = 10, category: str | None = None,
                       prefilter: str = "category", candidates: int = DEFAULT_CANDIDATES,
                       neighbors: int = DEFAULT_NEIGHBORS) -> list[SearchResult]:
        """Encode queries in batches, pick candidates (prefilter), rerank them exactly (kernels)."""
        topk = self._check_topk(topk)
        with self._timed("encode"):
            q, wq = self.encode(queries)
        return self.search_encoded(queries, q, wq, topk, category, prefilter, candidates, neighbors)

    def search_encoded(self, queries: list, q: torch.Tensor, wq: torch.Tensor, topk: int = 10,
                       category: str | None = None, prefilter: str = "category",
                       candidates: int = DEFAULT_CANDIDATES, neighbors: int = DEFAULT_NEIGHBORS) -> list[SearchResult]:
        """Prefilter + rerank for queries already encoded (q, W q: B x D), e.g. by Ray workers.

        `queries` only needs `.path`, `.mask_source` and optionally `.box` per query (for the results)."""
        topk = self._check_topk(topk)
        q, wq = q.to(self.device, torch.float32), wq.to(self.device, torch.float32)
        with self._timed("prefilter"):
            groups = self.prefilter.groups(q.cpu().numpy(), prefilter, candidates, neighbors, category)
        results: list[SearchResult | None] = [None] * len(queries)
        for group in groups:
            with self._timed("rerank"):
                ranked, scored = self._rerank_group(q, wq, group, topk)
            self.shapes_scored += int(scored.sum())
            for j, i in enumerate(group.queries.tolist()):
                results[i] = self._result(queries[i], ranked, j, group.categories, int(scored[j]))
        return results

    @contextmanager
    def _timed(self, stage: str):
        """Accumulate wall time per search stage in `self.timings` (seconds)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[stage] += time.perf_counter() - start

    def _rerank_group(self, q, wq, group: CandidateGroup, topk: int):
        """One rerank call for queries that share a candidate set; returns the results (rows of
        the snapshot) and how many shapes each query scored exactly."""
        members = torch.from_numpy(group.queries).to(self.device)
        q, wq = q[members], wq[members]
        if group.pruned:
            pruned = pruned_rerank(q, wq, self.views, self.shapes.bounds, topk)
            return pruned.ranked, pruned.scored
        if group.per_query_rows is not None:
            candidates = torch.from_numpy(group.per_query_rows).to(self.device)
            scored = (group.per_query_rows >= 0).sum(axis=1)
            return kernels.rerank(q, wq, self.views, topk, candidates=candidates), scored
        if group.rows is None:
            return kernels.rerank(q, wq, self.views, topk), np.full(len(members), len(self))
        rows = torch.from_numpy(group.rows).to(self.device)  # gathered chunk by chunk by the rerank
        return kernels.rerank(q, wq, self.views, topk, rows=rows), np.full(len(members), len(group.rows))

    def _check_topk(self, topk: int) -> int:
        if topk < 1:
            raise IbsrError(f"--topk must be at least 1 (got {topk})")
        if topk > len(self):
            raise IbsrError(f"--topk {topk} is larger than the index ({len(self)} shapes); use --topk {len(self)} "
                            "or less", self.shapes.index_dir)
        return topk

    @torch.no_grad()
    def encode(self, queries: list[Query]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embeddings q and attention keys W q, encoded in batches (on a CPU, one photo
        per work item of the torch pool, bf16 where the CPU has it; with its mirror image
        unless mirror is off: `ibsr.model.inference`)."""
        size = self.model.config.query_size
        qs = []
        for start in range(0, len(queries), ENCODE_BATCH):
            x = np.stack([query_tensor(query, size) for query in queries[start:start + ENCODE_BATCH]])
            qs.append(embed_queries(self.model, torch.from_numpy(x).to(self.device), self.mirror))
        q = torch.cat(qs)
        return q, self.model.attend(q).float()  # attend stays float32: W q feeds the rerank's logits

    def _result(self, query: Query, ranked, i: int, categories, scored: int) -> SearchResult:
        hits = []
        for rank, (score, row, view) in enumerate(zip(ranked.scores[i].tolist(), ranked.indices[i].tolist(),
                                                      ranked.best_view[i].tolist()), start=1):
            if row < 0:
                break
            shape_id, category, source_path = self.shapes.row(row)
            hits.append(Hit(rank, shape_id, category, float(score), source_path, int(view)))
        box = getattr(query, "box", None)
        return SearchResult(query.path, query.mask_source, hits, list(categories), scored / len(self),
                            None if box is None else box.to_list())

    def html_sections(self, results: list[SearchResult], queries: list[Query]) -> list[str]:
        """HTML blocks for `html_page`: each query, its mask and its hits' rendered views."""
        shape_ids = sorted({hit.shape_id for r in results for hit in r.hits})
        thumbnails = self.shapes.thumbnails(shape_ids)
        return [html_section(r, q, thumbnails) for r, q in zip(results, queries)]
