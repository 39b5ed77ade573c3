"""The CMIC training loop: batches of unique shapes, attention scores, instance + category loss.

A run directory (`--out`) holds

    config.json     the experiment's full config (every default filled in)
    state.pt        resumable state: model, optimizer, step, RNG state, best metrics, history
    metrics.jsonl   one line per `log_every` steps ({"step", "loss", "instance", "category"})
                    and one per validation ({"step", "val": {...}})
    best.pt         ibsr checkpoint (`save_checkpoint`) of the best validation top-1 so far
    last.pt         ibsr checkpoint of the final step

All randomness (batch order, fill shapes, augmentation) is drawn from generators seeded by
(seed, step), so a run resumed from `state.pt` takes exactly the steps the uninterrupted run
would have taken; the torch global RNG state is saved and restored as well.
"""

from __future__ import annotations

import copy
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ibsr.errors import IbsrError
from ibsr.files import atomic_path
from ibsr.model.checkpoint import default_weights_path, init_model, load_checkpoint, save_checkpoint
from ibsr.model.cmic import CMIC
from ibsr.model.losses import CMICLoss, cmic_loss
from ibsr.train.augment import apply_mask_mode, augment_queries, augment_views, plain_queries, plain_views
from ibsr.train.batch import AUGMENT_STREAM, Batch, sample_batch, step_rng, steps_per_epoch
from ibsr.train.config import TrainConfig, views_index
from ibsr.train.data import Dataset, load_dataset
from ibsr.train.device import autocast, torch_device
from ibsr.train.evaluate import batch_scores, cached_view_embeddings, evaluate

STATE_FORMAT = "ibsr-train-state"
STATE_VERSION = 1
# Keys that may change when a run is resumed (length, logging and checkpoint cadence, threads).
# The learning-rate schedule may change too, as long as the steps already taken keep their rates
# (e.g. a constant-rate run continued with a decay phase).
RESUMABLE_CHANGES = {("train", "steps"), ("train", "epochs"), ("train", "lr_decay_steps"), ("train", "threads"),
                     ("train", "channels_last"), ("train", "device"), ("train", "checkpoint_every"),
                     ("train", "log_every"), ("val", "every")}


def batch_loss(model: CMIC, data: Dataset, views: np.ndarray, batch: Batch, config: TrainConfig,
               rng: np.random.Generator | None, view_embeddings: torch.Tensor | None = None) -> CMICLoss:
    """The CMIC loss of one batch; `rng` None = no augmentation. `views` is `data.views` already
    cut to the configured views; `view_embeddings` (N x V x D), when given, are used instead of
    embedding the batch's views (a frozen rendering encoder, renderings not augmented)."""
    device = next(model.parameters()).device
    qx = torch.from_numpy(data.queries[batch.images]).to(device)
    vx = torch.from_numpy(views[batch.shapes]).to(device) if view_embeddings is None else None
    if rng is not None and config.augment.enabled:
        q_in = augment_queries(qx, config.augment, rng)
        v_in = augment_views(vx, config.augment, rng) if vx is not None else None
    else:
        q_in, v_in = plain_queries(qx), plain_views(vx) if vx is not None else None
    q_in = apply_mask_mode(q_in, config.method.mask)
    if config.train.channels_last:
        q_in = q_in.contiguous(memory_format=torch.channels_last)
    with autocast(device, config.train.amp):
        q = model.embed_queries(q_in)
        v = model.embed_views(v_in) if v_in is not None else view_embeddings[torch.from_numpy(batch.shapes).to(device)]
    # scores and losses in float32: the softmax over tau = 0.1 logits is precision-sensitive
    scores = batch_scores(model, q.float(), v.float(), config.method.attention)  # B x S
    m = config.method
    return cmic_loss(scores.t(), torch.from_numpy(batch.image_shape).to(device),
                     torch.from_numpy(data.shape_category[batch.shapes]).to(device),
                     torch.from_numpy(data.query_category[batch.images]).to(device),
                     tau=m.tau, beta1=m.beta1 if m.category_loss else 0.0)


@dataclass
class RunSummary:
    out: str
    step: int
    steps: int
    seconds_per_step: float
    best: dict | None
    best_checkpoint: str | None
    last_checkpoint: str
    history: list

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Trainer:
    """`Trainer(config, out_dir).run()`; `resume=True` continues from `out_dir/state.pt`."""

    def __init__(self, config: TrainConfig, out_dir, resume: bool = False, command: str = "",
                 progress: bool = True):
        self.config = config
        self.out = Path(out_dir)
        self.resume = resume
        self.command = command
        self.progress = progress
        self.step = 0
        self.best: dict | None = None
        self.history: list[dict] = []
        self._check_out_dir()
        torch.set_num_threads(config.train.threads)
        c = config
        mc = c.model_config
        self.train_data = load_dataset(c.data.train, mc.render_size, mc.query_size, c.data.cache,
                                       c.data.up_axis, progress=progress)
        self.val_data = None
        if c.data.val:
            self.val_data = load_dataset(c.data.val, mc.render_size, mc.query_size, c.data.cache, c.data.up_axis,
                                         categories=self.train_data.categories, progress=progress)
        self.views_index = views_index(c.method.views)
        self.train_views = np.ascontiguousarray(self.train_data.views[:, self.views_index])
        self.steps_per_epoch = steps_per_epoch(self.train_data.num_queries, c.train.batch_size)
        self.total_steps = c.train.total_steps(self.steps_per_epoch)
        if c.train.lr_decay_steps > self.total_steps:
            raise IbsrError(f"train.lr_decay_steps ({c.train.lr_decay_steps}) is longer than the run "
                            f"({self.total_steps} steps)")
        self.device = torch_device(c.train.device, "train.device")
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        self.model = init_model(mc, c.seed).to(self.device)
        if c.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._freeze()
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=c.train.lr, betas=tuple(c.train.betas))
        if resume:
            self._load_state()
        else:
            self._initial_weights()
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        self.view_embeddings = self._fixed_view_embeddings()
        self.anchor = self._imagenet_anchor()
        self.train()

    def train(self) -> None:
        """Train mode, except frozen modules: their BatchNorm statistics stay fixed too."""
        self.model.train()
        for name in self.config.train.freeze:
            self.model.get_submodule(name).eval()

    def _fixed_view_embeddings(self) -> torch.Tensor | None:
        """With the rendering encoder frozen (eval mode) and renderings not augmented, every view
        embedding is the same at every step: embed the catalog once (cached on disk by
        `cached_view_embeddings`) instead of every batch's views at every step. For
        EfficientNet-Lite on a CPU the 360 views of a batch cost more than its 30 photos'
        forward and backward."""
        c = self.config
        a = c.augment
        augmented = a.enabled and (tuple(a.render_crop_scale) != (1.0, 1.0) or a.render_flip > 0)
        if "rendering_encoder" not in c.train.freeze or augmented:
            return None
        return cached_view_embeddings(self.model, self.train_views, c.data.cache)

    def _imagenet_anchor(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, its ImageNet value) of each trainable query-backbone tensor when
        train.imagenet_anchor is set (L2-SP, Li et al. 2018: training on synthetic photos
        alone drifts away from what ImageNet knows about real ones); empty otherwise."""
        if not self.config.train.imagenet_anchor:
            return []
        backbone = self.model.query_encoder.backbone
        reference = copy.deepcopy(backbone)
        self.model.query_encoder.spec.load_imagenet(reference)
        values = dict(reference.named_parameters())
        return [(p, values[n].detach().clone()) for n, p in backbone.named_parameters()
                if p.requires_grad and not n.startswith("fc.")]

    def anchor_penalty(self) -> torch.Tensor:
        """train.imagenet_anchor x the squared distance of the query backbone from ImageNet."""
        distance = sum(((p.float() - ref.float()) ** 2).sum() for p, ref in self.anchor)
        return self.config.train.imagenet_anchor * distance

    def _param_groups(self) -> list[dict]:
        """The trainable parameters, grouped by learning rate: the attention's at
        train.attention_lr_scale, the encoders' backbones (all but their `fc` heads) at
        train.backbone_lr_scale, the rest at 1; `lr_scale` multiplies the scheduled rate."""
        t = self.config.train
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if t.attention_lr_scale == 1.0 and t.backbone_lr_scale == 1.0:
            # one group, as before the options existed (their runs stay resumable)
            return [{"params": [p for _, p in trainable], "lr_scale": 1.0}]

        def scale(name: str) -> float:
            if name.startswith("attention."):
                return t.attention_lr_scale
            if name.split(".", 1)[0] in ("query_encoder", "rendering_encoder") and ".fc." not in name:
                return t.backbone_lr_scale
            return 1.0

        groups: dict[float, list] = {}  # in the order of first appearance: saved runs' group order
        for name, p in trainable:
            groups.setdefault(scale(name), []).append(p)
        return [{"params": params, "lr_scale": s} for s, params in groups.items()]

    def _freeze(self) -> None:
        for name in self.config.train.freeze:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                raise IbsrError(f"train.freeze names {name!r}, which this model does not have; name a module "
                                "such as query_encoder.efficientnet._blocks.0") from None
            for p in module.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ the loop

    def train_step(self) -> CMICLoss:
        c = self.config
        batch = sample_batch(self.train_data.query_shape, self.train_data.num_shapes, c.train.batch_size,
                             c.seed, self.step)
        loss = batch_loss(self.model, self.train_data, self.train_views, batch, c,
                          step_rng(c.seed, AUGMENT_STREAM, self.step), self.view_embeddings)
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            # runs saved before train.attention_lr_scale existed restore groups without lr_scale
            group["lr"] = c.train.lr_at(self.step, self.total_steps) * group.get("lr_scale", 1.0)
        if self.anchor:
            loss = loss._replace(total=loss.total + self.anchor_penalty())
        loss.total.backward()
        self.optimizer.step()
        self.step += 1
        return loss

    def run(self) -> RunSummary:
        c = self.config
        stop = _TerminateAsInterrupt()
        started, first_step = time.perf_counter(), self.step
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="training",
                   disable=not self.progress, file=sys.stderr, mininterval=5 if not sys.stderr.isatty() else 0.1)
        try:
            with stop:
                if self.step == 0 and self.val_data is not None:
                    self._validate(bar)
                while self.step < self.total_steps:
                    loss = self.train_step()
                    values = {"loss": loss.total.item(), "instance": loss.instance.item(),
                              "category": loss.category.item()}
                    bar.update(1)
                    bar.set_postfix({k[:4]: f"{v:.3f}" for k, v in values.items()}
                                    | ({"top1": f"{self.best['top1']:.3f}"} if self.best else {}), refresh=False)
                    if self.step % c.train.log_every == 0:
                        self._log({"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), **values})
                    done = self.step == self.total_steps
                    if self.val_data is not None and (done or (c.val.every and self.step % c.val.every == 0)):
                        self._validate(bar)
                    if done or self.step % c.train.checkpoint_every == 0:
                        self._save_state()
        except KeyboardInterrupt:
            self._save_state()
            bar.close()
            raise IbsrError(f"interrupted at step {self.step}/{self.total_steps}; state saved in "
                            f"{self.out / 'state.pt'}, continue with --resume") from None
        bar.close()
        seconds = (time.perf_counter() - started) / max(1, self.step - first_step)
        final_val = self.history[-1] if self.history and self.history[-1]["step"] == self.step else None
        last = save_checkpoint(self.model, self.out / "last.pt", self._info(final_val))
        best = self.out / "best.pt"
        return RunSummary(str(self.out), self.step, self.total_steps, round(seconds, 4), self.best,
                          str(best) if best.is_file() else None, str(last), self.history)

    # ------------------------------------------------------------------ validation

    def validate(self) -> dict:
        c = self.config
        return evaluate(self.model, self.val_data, self.views_index, c.method.mask, c.method.attention, c.val.topk)

    def _validate(self, bar) -> None:
        t0 = time.perf_counter()
        metrics = self.validate()
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), **metrics}
        self.history.append(record)
        self._log({"step": self.step, "val": metrics})
        k = self.config.val.topk
        improved = self.best is None or _rank(metrics, k) > _rank(self.best, k)
        if improved:
            self.best = record
            save_checkpoint(self.model, self.out / "best.pt", self._info(record))
        bar.write(f"step {self.step}: val top1 {metrics['top1']:.3f} top{k} {metrics[f'top{k}']:.3f} "
                  f"category {metrics['category']:.3f}" + (" (best so far, saved best.pt)" if improved else ""),
                  file=sys.stderr)

    # ------------------------------------------------------------------ files

    def _info(self, val: dict | None) -> dict:
        return {
            "trained_by": "ibsr-train",
            "command": self.command,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 3),
            "train_data": {"path": self.train_data.name, "shapes": self.train_data.num_shapes,
                           "queries": self.train_data.num_queries, "categories": self.train_data.categories},
            "val": val,
            "val_history": list(self.history),
        }

    def _log(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _check_out_dir(self) -> None:
        state = self.out / "state.pt"
        if self.resume and not state.is_file():
            raise IbsrError("nothing to resume: no state.pt in the run folder; drop --resume to start", self.out)
        if not self.resume and state.is_file():
            raise IbsrError("run folder already holds a run (state.pt); pass --resume to continue it, "
                            "or choose another --out", self.out)

    def _save_state(self) -> None:
        payload = {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "best": self.best,
            "history": self.history,
        }
        # An open file: torch.save's archive name does not depend on the temporary name.
        with atomic_path(self.out / "state.pt", parents=False) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)

    def _load_state(self) -> None:
        path = self.out / "state.pt"
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise IbsrError(f"unreadable training state ({type(e).__name__}); start a new run", path) from None
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise IbsrError("not an ibsr-train state file", path)
        if payload.get("version") != STATE_VERSION:
            raise IbsrError(f"training state version {payload.get('version')!r} is not supported", path)
        # read back through TrainConfig: keys added since the run started compare at their defaults
        saved = TrainConfig.from_dict(payload["config"])
        changed = _config_changes(saved.to_dict(), self.config.to_dict()) - RESUMABLE_CHANGES
        if changed:
            names = ", ".join(".".join(k) for k in sorted(changed))
            raise IbsrError(f"the config differs from the run's in {names}; only the length (train.steps, "
                            f"train.epochs), threads and logging/validation intervals may change on --resume",
                            path)
        self._check_schedule(saved, int(payload["step"]), path)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        self.step = int(payload["step"])
        self.best = payload["best"]
        self.history = list(payload["history"])
        if self.step > self.total_steps:
            raise IbsrError(f"the run is already at step {self.step}, past this config's {self.total_steps} "
                            f"steps; raise train.steps or train.epochs to continue", path)

    def _check_schedule(self, old: TrainConfig, done: int, path) -> None:
        old_total = old.train.total_steps(self.steps_per_epoch)
        for step in range(done):
            if old.train.lr_at(step, old_total) != self.config.train.lr_at(step, self.total_steps):
                raise IbsrError(f"the new learning-rate schedule changes the rate of step {step}, which the run "
                                f"already took; let train.lr_decay_steps start at or after step {done}", path)

    def _initial_weights(self) -> None:
        """Start from a checkpoint (`model.init`), the packaged ImageNet weights
        (`model.pretrained`), torchvision ImageNet files, or the seed's random init."""
        m = self.config.model
        if m.init:
            self._init_from_checkpoint(m.init)
        elif m.pretrained:
            for encoder in (self.model.query_encoder, self.model.rendering_encoder):
                encoder.load_imagenet()
        else:
            self._imagenet_init()

    def _init_from_checkpoint(self, path: str) -> None:
        source = default_weights_path() if path == "default" else Path(path)
        base = load_checkpoint(source)
        if base.config != self.model.config:
            raise IbsrError(f"model.init checkpoint is a {base.config.query_arch}/{base.config.render_arch} "
                            f"{base.config.query_size}/{base.config.render_size} px model; this config builds "
                            f"{self.model.config}; use a config with the checkpoint's [model]", source)
        self.model.load_state_dict(base.state_dict())

    def _imagenet_init(self) -> None:
        m = self.config.model
        for path, encoder in ((m.imagenet_query, self.model.query_encoder), (m.imagenet_render, self.model.rendering_encoder)):
            if not path:
                continue
            if not Path(path).is_file():
                raise IbsrError("ImageNet weights not found (a torchvision resnet*.pth state dict)", path)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise IbsrError(f"unreadable ImageNet weights ({type(e).__name__})", path) from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            encoder.load_imagenet(state)


def train(config: TrainConfig, out_dir, resume: bool = False, command: str = "", progress: bool = True) -> RunSummary:
    """Train (or resume) one run; returns its summary."""
    return Trainer(config, out_dir, resume=resume, command=command, progress=progress).run()


def _rank(metrics: dict, k: int) -> tuple:
    return (metrics["top1"], metrics[f"top{k}"], metrics["category"])


def _config_changes(old: dict, new: dict, prefix=()) -> set:
    changes = set()
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes |= _config_changes(a, b, prefix + (key,))
        elif a != b:
            changes.add(prefix + (key,))
    return changes


class _TerminateAsInterrupt:
    """SIGTERM (e.g. `kill PID`) stops the run like Ctrl-C: the state is saved first."""

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt
