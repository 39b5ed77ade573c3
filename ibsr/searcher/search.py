"""The Searcher: photos in, ranked catalog shapes out.

It searches one snapshot of an index (`ibsr.index.IndexSnapshot`: one pinned table version,
every shape's view embeddings mapped from the flat sidecar or read once from the table, the
FAISS prefilter), encodes queries in batches, asks the prefilter that `SearchOptions` names
(`prefilters/`) which shapes each query's rerank should look at, and has each candidate set
score its queries exactly (`ibsr.kernels`), one rerank call per set of queries that share
candidates.
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
from ibsr.photos.query import Query, calibration_inputs, load_query, query_tensor
from ibsr.searcher.options import SearchOptions, search_options
from ibsr.searcher.prefilters import CandidateSet, SharedRows, ShapeLookup, get_prefilter
from ibsr.searcher.results import Hit, SearchResult, html_section

ENCODE_BATCH = 32


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
                 device: str | None = None, mask_method: str = "auto", mask_weights: Path | None = None):
        """index: a snapshot, or an index directory opened into one (its latest version).
        mask_method / mask_weights: the automatic mask of photos without mask or alpha
        (`ibsr.photos.mask.automatic_mask`): "auto" (the mask network if installed, else
        GrabCut), "model" or "grabcut"; mask_weights replaces the shipped mask network."""
        check_mask_method(mask_method)
        self.mask_method, self.mask_weights = mask_method, mask_weights
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
        self.lookup = ShapeLookup(self.shapes)
        self.timings: dict[str, float] = defaultdict(float)  # stage -> seconds, see _timed
        self.shapes_scored = 0  # shapes scored exactly, summed over queries (fraction: / (queries x len(self)))

    def __len__(self) -> int:
        return len(self.shapes)

    def search(self, images: list, masks: list | None = None, boxes: list | None = None,
               options: SearchOptions | None = None, **settings) -> list[SearchResult]:
        """Rank the catalog for each image (a path or a `Query`); best first. boxes: a `Box` (or
        None) per image, the part of the photo that holds the object (`load_query`).
        options: a `SearchOptions` (default: its defaults); keyword settings (topk=5,
        prefilter="ann", ...) replace its fields."""
        options = search_options(options, **settings)
        return self.search_queries(self.load_queries(images, masks, boxes), options)

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

    def search_queries(self, queries: list[Query], options: SearchOptions | None = None,
                       **settings) -> list[SearchResult]:
        """Encode queries in batches, pick candidates (prefilter), rerank them exactly (kernels).
        options and settings: as `search`."""
        options = self._check_topk(search_options(options, **settings))
        with self._timed("encode"):
            q, wq = self.encode(queries)
        return self.search_encoded(queries, q, wq, options)

    def search_encoded(self, queries: list, q: torch.Tensor, wq: torch.Tensor, options: SearchOptions | None = None,
                       **settings) -> list[SearchResult]:
        """Prefilter + rerank for queries already encoded (q, W q: B x D), e.g. by Ray workers.

        `queries` only needs `.path`, `.mask_source` and optionally `.box` per query (for the
        results). options and settings: as `search`."""
        options = self._check_topk(search_options(options, **settings))
        q, wq = q.to(self.device, torch.float32), wq.to(self.device, torch.float32)
        with self._timed("prefilter"):
            sets = self.candidate_sets(q.cpu().numpy(), options)
        results: list[SearchResult | None] = [None] * len(queries)
        for candidates in sets:
            with self._timed("rerank"):
                members = torch.from_numpy(candidates.queries).to(self.device)
                ranked, scored = candidates.rerank(q[members], wq[members], self.views, self.shapes, options.topk)
            self.shapes_scored += int(scored.sum())
            for j, i in enumerate(candidates.queries.tolist()):
                results[i] = self._result(queries[i], ranked, j, candidates.categories, int(scored[j]))
        return results

    def candidate_sets(self, q: np.ndarray, options: SearchOptions) -> list[CandidateSet]:
        """Which shapes the queries `q` (B x D) rerank: every shape of the given category, else
        what the options' prefilter picks."""
        if options.category is not None:
            return [SharedRows(np.arange(len(q)), self.lookup.category_rows([options.category]), (options.category,))]
        return get_prefilter(options.prefilter).candidates(self.lookup, q, options)

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

    def _check_topk(self, options: SearchOptions) -> SearchOptions:
        if options.topk > len(self):
            raise IbsrError(f"--topk {options.topk} is larger than the index ({len(self)} shapes); use --topk "
                            f"{len(self)} or less", self.shapes.index_dir)
        return options

    @torch.no_grad()
    def encode(self, queries: list[Query]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embeddings q and attention keys W q, encoded in batches (on a CPU, one photo
        per work item of the torch pool, bf16 where the CPU has it: `ibsr.model.inference`)."""
        size = self.model.config.query_size
        qs = []
        for start in range(0, len(queries), ENCODE_BATCH):
            x = np.stack([query_tensor(query, size) for query in queries[start:start + ENCODE_BATCH]])
            qs.append(embed_queries(self.model, torch.from_numpy(x).to(self.device),
                                    calibration=lambda: calibration_inputs(size)))
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
