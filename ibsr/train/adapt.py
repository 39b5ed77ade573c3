"""`ibsr-train adapt`: fit a model to a user's own catalog without a single labelled photo.

The catalog's meshes are photographed synthetically (`ibsr.synth.mesh_photos`, the photo
machinery of `ibsr-data synth`), the last photo of every shape is held out, and the base model
(the shipped one, or `--weights`) is fine-tuned on the others: CMIC training (`CMICTask`, run by
the loop) with a config derived from the base (`Adaptation.config`: `model.init` = the base
checkpoint, a small learning rate). The held-out photos are scored before and after, with the
model's own attention score against every catalog shape.

Sides:
- `query` (default): the rendering encoder is frozen (weights and BatchNorm statistics), so
  every view embedding an index holds stays valid. The result has the base's `rendering_id`
  and search accepts it on an index built with the base weights, no rebuild
  (`ibsr.searcher.search.same_rendering_side`). Renderings are not augmented, so the task
  embeds the catalog's views once (`CMICTask._fixed_view_embeddings`) and a step costs only the
  photos' forward and backward.
- `both`: everything trains; the views change, so an index must be rebuilt with the result.

Work folder (`--work`, default `<folder of --out>/.adapt-<name of --out>`):

    adapt.json   the run: options, base ids, catalog, held-out metrics, the step plan, status
    photos/      photos + masks of every shape, and one `done` record per finished shape
    train/       catalog.jsonl (the usable shapes) + queries.jsonl (photos 0..K-2 of each)
    heldout/     catalog.jsonl + queries.jsonl (photo K-1 of each)
    cache/       renderings, decoded photos, view embeddings (the ibsr.train caches)
    run/         the training's run folder (state.pt, metrics.jsonl, last.pt)

Time (`--minutes`): photos, the "before" measurement and `CALIBRATION_STEPS` training steps
come first. Their seconds per step (warm-up step excluded) estimate how many steps fit in what
is left, keeping room for the "after" measurement; half of those run at a constant rate, and
their own timing re-plans the rest, whose last `DECAY_FRACTION` decays the rate to 0 (a few
calibration steps on a shared machine can misjudge the rate badly: benchmarks/RESULTS.md,
"Catalog adaptation"). Plans are stored in
adapt.json and `--resume` keeps them: a resumed run takes exactly the steps of an
uninterrupted one (the run folder's resume). A plan still to be made when a run resumes gets the
`--minutes` budget afresh, counted from the resume.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from ibsr.cpus import usable_cpus
from ibsr.errors import IbsrError
from ibsr.files import atomic_write
from ibsr.geometry.mesh import UP_AXES
from ibsr.indexer.discover import discover
from ibsr.model.checkpoint import (checkpoint_id, default_weights_path, load_checkpoint_with_info, rendering_id,
                                   save_checkpoint)
from ibsr.model.cmic import CMIC
from ibsr.synth.mesh_photos import photograph_catalog, write_dataset
from ibsr.train.cmic import CMICTask
from ibsr.train.config import AdaptOptions, TrainConfig, views_index
from ibsr.train.data import Dataset, load_dataset
from ibsr.train.device import torch_device
from ibsr.train.evaluate import batch_scores, cached_view_embeddings, embed_queries, retrieval_metrics
from ibsr.train.loop import Loop
from ibsr.train.run_dir import RunDir

RECORD_FILE = "adapt.json"
RECORD_VERSION = 1
CALIBRATION_STEPS = 4  # the first warms up (allocations, kernel selection); the others are timed
DECAY_FRACTION = 0.3  # cosine decay of the learning rate over the last 30% of the steps
LR_FRACTION = 0.2  # default rate: a fifth of the rate the base was trained at (fine-tuning moves less)
FALLBACK_LR = 2e-5  # ... for a base whose info does not say (imported or hand-made checkpoints)
SAVE_EVERY_SECONDS = 60  # resumable state written about this often
TOPK = 10
# What makes a run: `--resume` refuses to continue with any of these changed.
RUN_KEYS = ("photos_per_shape", "photo_size", "seed", "side", "lr", "batch_size", "up_axis", "category_loss",
            "whole_copies")


def work_dir(out, work=None) -> Path:
    """The work folder of an adapt run writing `out`: `work`, else beside `out`."""
    out = Path(out)
    return Path(work) if work else out.parent / f".adapt-{out.stem}"


def read_record(work) -> dict | None:
    """The work folder's adapt.json, or None when there is none."""
    path = Path(work) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IbsrError(f"unreadable adapt record ({exc}); delete it to start over", path) from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise IbsrError("not an adapt record of this ibsr version; delete it to start over", path)
    return record


def recorded_options(work) -> tuple[AdaptOptions, str]:
    """(options, base weights path) of the run in `work`: what `--resume` continues with."""
    record = read_record(work)
    if record is None:
        raise IbsrError(f"nothing to resume: no {RECORD_FILE} in the work folder; drop --resume to start", work)
    known = {f.name for f in fields(AdaptOptions)}
    return AdaptOptions(**{k: v for k, v in record["options"].items() if k in known}), record["base"]["path"]


def adapt(catalog, out, options: AdaptOptions = AdaptOptions(), weights=None, work=None, resume: bool = False,
          command: str = "", progress: bool = True) -> dict:
    """Adapt the base model (`weights`, default the shipped one) to `catalog`, write `out`;
    returns the summary (also what `--json` prints)."""
    return Adaptation(catalog, out, options, weights, work, resume, command, progress).run()


class Adaptation:
    """One `ibsr-train adapt` run (see the module docstring); `run()` does every phase that
    is not done yet."""

    def __init__(self, catalog, out, options: AdaptOptions, weights=None, work=None, resume: bool = False,
                 command: str = "", progress: bool = True):
        self.started = time.perf_counter()
        options.check()
        self.options = options
        self.catalog = Path(catalog).resolve()
        self.out = Path(out)
        self.work = work_dir(out, work).resolve()
        self.resume = resume
        self.command = command
        self.progress = progress
        self.device = torch_device(options.device)
        self.threads = options.threads or usable_cpus()
        _check_writable(self.out)
        self.base_path = Path(weights) if weights else default_weights_path()
        self.base, base_info = load_checkpoint_with_info(self.base_path)
        self.lr = options.lr or _base_lr(base_info) * LR_FRACTION or FALLBACK_LR
        self.base_ids = {"path": str(self.base_path.resolve()), "encoder_id": checkpoint_id(self.base_path),
                         "rendering_id": rendering_id(self.base)}
        self.record: dict = {}

    # ------------------------------------------------------------------ phases

    def run(self) -> dict:
        entries = discover(self.catalog)  # a missing or empty catalog fails before anything is written
        self._open_record()
        try:
            return self._run(entries)
        except KeyboardInterrupt:  # a stop request during training saves its state and says so; this is the rest
            raise IbsrError("interrupted; what is done (photos, measurements, training state) is kept: "
                            "continue with --resume", self.work) from None

    def _run(self, entries) -> dict:
        self._photos(entries)
        heldout = load_dataset(self.work / "heldout", self.base.config.render_size, self.base.config.query_size,
                               self.work / "cache", self.options.up_axis, progress=self.progress)
        before = self._before(heldout)
        task = self._train()
        after = self.measure(task.model, heldout)
        self._say(f"held-out photos: top-1 {before['top1']:.1%} -> {after['top1']:.1%}, top-{TOPK} "
                  f"{before[f'top{TOPK}']:.1%} -> {after[f'top{TOPK}']:.1%}, category "
                  f"{before['category']:.1%} -> {after['category']:.1%}")
        return self._write(task, before, after)

    def _open_record(self) -> None:
        """Continue the recorded run (--resume) or start a new one (photos and caches kept)."""
        record = read_record(self.work)
        state = self.work / "run" / "state.pt"
        if self.resume:
            if record is None:
                raise IbsrError(f"nothing to resume: no {RECORD_FILE} here; drop --resume to start", self.work)
            if record["status"] == "finished":
                raise IbsrError(f"the adapt run here already finished (it wrote {record['out']}); drop --resume "
                                "to start a new one", self.work)
            self._check_same_run(record)
            self.record = record
            return
        if record is not None and record["status"] != "finished" and state.is_file():
            raise IbsrError(f"holds an interrupted adapt run; pass --resume to finish it, or delete "
                            f"{state.parent} to start over", self.work)
        try:
            shutil.rmtree(self.work / "run", ignore_errors=True)
            self.work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IbsrError(f"cannot create the work folder ({exc.strerror}); choose another --work",
                            self.work) from None
        self.record = {"version": RECORD_VERSION, "status": "started", "catalog": str(self.catalog),
                       "out": str(self.out), "base": self.base_ids, "options": self._options_record(),
                       "command": self.command}
        self._save_record()

    def _check_same_run(self, record: dict) -> None:
        if record["catalog"] != str(self.catalog):
            raise IbsrError(f"the run here adapts to {record['catalog']}, not {self.catalog}; give the same "
                            "CATALOG, or another --work", self.work)
        if record["base"]["encoder_id"] != self.base_ids["encoder_id"]:
            raise IbsrError(f"the run here started from weights {record['base']['encoder_id']} "
                            f"({record['base']['path']}), now {self.base_ids['encoder_id']}; pass the same "
                            "--weights, or drop --resume to start over", self.work)
        defaults = AdaptOptions()  # a key the record lacks (an older run) had its default then
        recorded = {k: record["options"].get(k, getattr(defaults, k)) for k in RUN_KEYS}
        changed = {k: (getattr(self.options, k), recorded[k]) for k in RUN_KEYS if recorded[k] != getattr(self.options, k)}
        if changed:
            names = ", ".join(f"{k} {old!r} -> {new!r}" for k, (new, old) in changed.items())
            raise IbsrError(f"--resume continues the run with its own settings ({names}); drop those "
                            "options, or drop --resume to start over", self.work)

    def _options_record(self) -> dict:
        """Every option: `--resume` takes those not given again from here."""
        return asdict(self.options)

    def _photos(self, entries) -> None:
        """K photos of every loadable catalog mesh (skipping those already made), and the
        train / held-out dataset folders."""
        if self.record.get("shapes") and (self.work / "heldout" / "queries.jsonl").is_file():
            return  # --resume: the run keeps the shapes it started with
        o = self.options
        done, skipped = photograph_catalog(entries, self.work / "photos", o.photos_per_shape, o.seed, o.photo_size,
                                           o.up_axis, o.workers, self.progress)
        if len(done) < 2:
            raise IbsrError(f"adaptation needs at least 2 usable meshes; {len(done)} of {len(entries)} could be "
                            f"loaded and photographed", self.catalog)
        train_photos = self._write_datasets(done)
        self.record.update(shapes=len(done), skipped=skipped, photos={"train": train_photos, "heldout": len(done)})
        self._save_record()

    def _write_datasets(self, done: list) -> int:
        """train/ and heldout/: the usable shapes as a manifest, and the photos split by k
        (the last photo of every shape held out). Returns the number of training photos."""
        whole = self._whole_mask() if self.options.whole_copies else None

        def train_photos(photos):
            kept = photos[:-1]
            return kept + [(image, whole) for image, _ in kept] if whole else kept

        write_dataset(self.work / "heldout", done, lambda photos: photos[-1:], "../photos")
        return write_dataset(self.work / "train", done, train_photos, "../photos")

    def _whole_mask(self) -> str:
        """An all-object mask of the photos' size in photos/ (its name there): the photos are
        square, `photo_size` px."""
        size = self.options.photo_size
        name = f"whole-{size}.png"
        _, png = cv2.imencode(".png", np.full((size, size), 255, np.uint8))
        atomic_write(self.work / "photos" / name, png.tobytes())
        return name

    def _before(self, heldout: Dataset) -> dict:
        if self.record.get("before"):
            return self.record["before"]
        started = time.perf_counter()
        metrics = self.measure(self.base.to(self.device), heldout)
        self.record.update(before=metrics, measure_seconds=round(time.perf_counter() - started, 2))
        self._save_record()
        self._say(f"base model {self.base_ids['encoder_id']} on {metrics['queries']} held-out photos of "
                  f"{metrics['shapes']} shapes: top-1 {metrics['top1']:.1%}, top-{TOPK} {metrics[f'top{TOPK}']:.1%}, "
                  f"category {metrics['category']:.1%}")
        return metrics

    def _train(self) -> CMICTask:
        """Calibration steps, then half of the steps they say fit at a constant rate, then the
        rest, re-planned from those steps' own timing, ending with the rate's decay. Each
        stage is a run of the loop over the same run folder, resumed with a longer schedule
        (the steps already taken keep their rate, so the stages are one run)."""
        plan = self.record.get("plan")
        if plan is None:
            shutil.rmtree(self.work / "run", ignore_errors=True)  # an interrupted calibration is cheaper to redo
            calibration = min(CALIBRATION_STEPS, self.options.max_steps or CALIBRATION_STEPS)
            _, seconds = self._stage(calibration, 0, calibration, resume=False)
            plan = self._plan_constant(calibration, seconds)
        if plan["stage"] == "constant":
            _, seconds = self._stage(plan["constant_steps"], 0, plan["checkpoint_every"])
            plan = self._plan_final(plan, seconds or plan["calibration_seconds_per_step"])
        task, seconds = self._stage(plan["steps"], plan["lr_decay_steps"], plan["checkpoint_every"])
        if seconds:
            self.record["seconds_per_step"] = round(seconds, 4)
        return task

    def _stage(self, steps: int, decay: int, checkpoint_every: int, resume: bool = True) -> tuple[CMICTask, float]:
        """The training run to `steps`; with the median seconds of the steps it took (0 when
        none; the first one warms up and is left out)."""
        task = CMICTask(self.config(steps, decay, checkpoint_every), RunDir(self.work / "run", resume),
                        command=self.command, progress=self.progress)
        loop = Loop(task, self.progress)
        loop.run()
        timed = loop.step_seconds[1:] or loop.step_seconds
        return task, statistics.median(timed) if timed else 0.0

    def _seconds_left(self) -> float:
        """Of the budget, what is left for training: the "after" measurement takes about as
        long as the "before" one did."""
        return self.options.minutes * 60 - (time.perf_counter() - self.started) - self.record["measure_seconds"]

    def _steps_that_fit(self, done: int, seconds_per_step: float) -> tuple[int, float]:
        left = self._seconds_left()
        steps = done + max(0, math.floor(left / max(seconds_per_step, 1e-6)))
        return (min(steps, self.options.max_steps) if self.options.max_steps else steps), left

    def _plan_constant(self, calibration: int, seconds_per_step: float) -> dict:
        """The calibration's estimate can be far off (a few steps, a shared machine): train
        half of the steps it promises at a constant rate, then measure again."""
        estimate, left = self._steps_that_fit(calibration, seconds_per_step)
        plan = {"stage": "constant", "calibration_steps": calibration,
                "calibration_seconds_per_step": seconds_per_step, "estimated_steps": estimate,
                "constant_steps": calibration + (estimate - calibration) // 2,
                "checkpoint_every": max(1, round(SAVE_EVERY_SECONDS / max(seconds_per_step, 1e-6)))}
        self._save_plan(plan)
        self._say(f"{seconds_per_step:.2f} s/step: about {estimate} steps fit ({max(left, 0) / 60:.1f} min left "
                  f"of {self.options.minutes:g}); {plan['constant_steps']} at a constant rate, then re-planned")
        return plan

    def _plan_final(self, plan: dict, seconds_per_step: float) -> dict:
        done = plan["constant_steps"]
        steps, left = self._steps_that_fit(done, seconds_per_step)
        plan = {**plan, "stage": "final", "steps": steps, "seconds_per_step": seconds_per_step, "seconds_left": left,
                "lr_decay_steps": min(round(DECAY_FRACTION * steps), steps - done),
                "checkpoint_every": max(1, round(SAVE_EVERY_SECONDS / max(seconds_per_step, 1e-6)))}
        self._save_plan(plan)
        why = f"--max-steps {self.options.max_steps}" if steps == self.options.max_steps else \
            f"{max(left, 0) / 60:.1f} min left"
        self._say(f"{seconds_per_step:.2f} s/step: {steps} steps in all ({why}), the last {plan['lr_decay_steps']} "
                  "with a decaying learning rate")
        return plan

    def _save_plan(self, plan: dict) -> None:
        self.record["plan"] = plan
        self._save_record()

    def config(self, steps: int, decay: int, checkpoint_every: int) -> TrainConfig:
        """The training config: the base's model, `init` = the base, the photos of train/."""
        o = self.options
        model = self.base.config.to_dict()
        views = model.pop("views")
        query_side = o.side == "query"
        return TrainConfig.from_dict({
            "seed": o.seed,
            "data": {"train": str(self.work / "train"), "val": "", "cache": str(self.work / "cache"),
                     "up_axis": o.up_axis},
            "model": {"preset": "small", **model, "init": self.base_ids["path"]},
            "train": {"batch_size": o.batch_size, "steps": steps, "epochs": 0, "lr": self.lr, "lr_decay_steps": decay,
                      "threads": self.threads, "amp": "auto", "device": str(self.device),
                      "freeze": ["rendering_encoder"] if query_side else [],
                      "checkpoint_every": checkpoint_every, "log_every": 10},
            # query side: the index's views are never augmented, and unaugmented views let the
            # task embed them once
            "augment": {"render_crop_scale": [1.0, 1.0], "render_flip": 0.0} if query_side else {},
            "method": {"views": views, "category_loss": o.category_loss},
            "val": {"every": 0},
        }, source=str(self.work / RECORD_FILE))

    def measure(self, model: CMIC, data: Dataset) -> dict:
        """Top-1 / top-k / category of the held-out photos against every catalog shape, with the
        model's own attention score (`ibsr.train.evaluate`); view embeddings cached by
        rendering id, so a frozen rendering encoder embeds the catalog once."""
        model = model.to(self.device)
        q = embed_queries(model, data.queries)
        views = np.ascontiguousarray(data.views[:, views_index(model.config.views)])
        v = cached_view_embeddings(model, views, self.work / "cache")
        with torch.no_grad():
            scores = torch.cat([batch_scores(model, q[i:i + 256], v) for i in range(0, len(q), 256)])
        return retrieval_metrics(scores, data.query_shape, data.shape_category, data.query_category, TOPK)

    def _write(self, task: CMICTask, before: dict, after: dict) -> dict:
        model, o = task.model, self.options
        rid = rendering_id(model)
        if o.side == "query" and rid != self.base_ids["rendering_id"]:
            raise RuntimeError("bug: query-side adaptation changed the rendering encoder")
        info = {
            "adapted_by": "ibsr-train adapt",
            "command": self.command,
            "adapted_from": self.base_ids,
            "side": o.side,
            "catalog": str(self.catalog),
            "shapes": self.record["shapes"],
            "skipped": len(self.record["skipped"]),
            "photos": {"per_shape": o.photos_per_shape, "size": o.photo_size, "seed": o.seed, **self.record["photos"]},
            "before": before,
            "after": after,
            "step": task.step,
            "lr": self.lr,
            "plan": self.record["plan"],
            "seconds_per_step": self.record.get("seconds_per_step"),
            "config": task.config.to_dict(),
        }
        try:  # float32: halving would round a float32 base's frozen rendering weights, and so its rendering id
            save_checkpoint(model, self.out, info)
        except OSError as exc:
            raise IbsrError(f"cannot write the adapted checkpoint ({exc.strerror}); choose another --out",
                            self.out) from None
        self.record.update(status="finished", after=after)
        self._save_record()
        return {"out": str(self.out), "encoder_id": checkpoint_id(self.out), "rendering_id": rid,
                "base": self.base_ids, "side": o.side, "rebuild_index": o.side != "query",
                "catalog": str(self.catalog), "shapes": self.record["shapes"], "skipped": self.record["skipped"],
                "photos": info["photos"], "steps": task.step, "lr": self.lr,
                "seconds_per_step": info["seconds_per_step"],
                "plan": self.record["plan"], "before": before, "after": after,
                "worse_on_held_out": after["top1"] < before["top1"], "work": str(self.work),
                "seconds": round(time.perf_counter() - self.started, 1)}

    # ------------------------------------------------------------------ helpers

    def _save_record(self) -> None:
        # 0o600: a private file (ibsr.files); the work folder exists (made by the run, not here)
        atomic_write(self.work / RECORD_FILE, json.dumps(self.record, indent=2), mode=0o600, parents=False)

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr)


def _base_lr(info: dict) -> float:
    """The learning rate an `ibsr-train` checkpoint was trained at (0 when its info does not say).
    A weight average (`ibsr-train average`) answers for the first model it averaged: the lineage's
    trained base, not the fine-tunes averaged into it."""
    sources = info.get("averaged_from")
    if isinstance(sources, list) and sources and isinstance(sources[0], dict):
        return _base_lr(sources[0].get("info") or {})
    lr = info.get("config", {}).get("train", {}).get("lr") if isinstance(info.get("config"), dict) else None
    return float(lr) if isinstance(lr, (int, float)) and lr > 0 else 0.0


def _check_writable(out: Path) -> None:
    """Fail before hours of work, not after: --out must be a file we can create."""
    if out.is_dir():
        raise IbsrError("is a folder; --out takes the checkpoint file to write (e.g. adapted.pt)", out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise IbsrError(f"cannot write the adapted checkpoint there ({exc.strerror or exc}); choose another --out",
                        out) from None

