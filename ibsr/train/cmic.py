"""CMIC training (`ibsr-train run`), a task of the loop (`ibsr.train.loop`): batches of unique
shapes, attention scores, instance + category loss, validation, checkpoints.

Beside the run folder's config.json, state.pt and metrics.jsonl (`ibsr.train.run_dir`) a run
writes

    best.pt         ibsr checkpoint (`save_checkpoint`) of the best validation top-1 so far
    last.pt         ibsr checkpoint of the final step

metrics.jsonl holds one line per `log_every` steps ({"step", "epoch", "loss", "instance",
"category"}) and one per validation ({"step", "val": {...}}); state.pt the model, the optimizer,
the torch RNG state, the best metrics and the validation history.

All randomness (batch order, fill shapes, augmentation) is drawn from generators seeded by
(seed, step), so a run resumed from `state.pt` takes exactly the steps the uninterrupted run
would have taken; the torch global RNG state is saved and restored as well.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ibsr.errors import IbsrError
from ibsr.model.checkpoint import default_weights_path, init_model, load_checkpoint, save_checkpoint
from ibsr.model.cmic import CMIC
from ibsr.model.losses import CMICLoss, cmic_loss
from ibsr.train.augment import apply_mask_mode, augment_queries, augment_views, plain_queries, plain_views
from ibsr.train.batch import AUGMENT_STREAM, Batch, sample_batch, step_rng, steps_per_epoch
from ibsr.train.config import TrainConfig, views_index
from ibsr.train.data import Dataset, load_dataset
from ibsr.train.device import autocast, torch_device
from ibsr.train.evaluate import batch_scores, cached_view_embeddings, evaluate
from ibsr.train.feature_anchor import FeatureAnchor
from ibsr.train.loop import Loop, Task
from ibsr.train.run_dir import RunDir

STATE_FORMAT = "ibsr-train-state"
# Keys that may change when a run is resumed (length, logging and checkpoint cadence, threads).
# The learning-rate schedule may change too, as long as the steps already taken keep their rates
# (e.g. a constant-rate run continued with a decay phase).
RESUMABLE_CHANGES = frozenset({"train.steps", "train.epochs", "train.lr_decay_steps", "train.threads",
                               "train.channels_last", "train.device", "train.checkpoint_every",
                               "train.log_every", "val.every"})


def batch_loss(model: CMIC, data: Dataset, views: np.ndarray, batch: Batch, config: TrainConfig,
               rng: np.random.Generator | None, view_embeddings: torch.Tensor | None = None,
               feature_anchor: FeatureAnchor | None = None) -> CMICLoss:
    """The CMIC loss of one batch; `rng` None = no augmentation. `views` is `data.views` already
    cut to the configured views; `view_embeddings` (N x V x D), when given, are used instead of
    embedding the batch's views (a frozen rendering encoder, renderings not augmented); a
    `feature_anchor` adds its penalty on the batch's photos to the total."""
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
    penalty = None
    with autocast(device, config.train.amp):
        if feature_anchor is None:
            q = model.embed_queries(q_in)
        else:
            q, penalty = feature_anchor.embed(model.query_encoder, q_in)
        v = model.embed_views(v_in) if v_in is not None else view_embeddings[torch.from_numpy(batch.shapes).to(device)]
    # scores and losses in float32: the softmax over tau = 0.1 logits is precision-sensitive
    scores = batch_scores(model, q.float(), v.float(), config.method.attention)  # B x S
    m = config.method
    loss = cmic_loss(scores.t(), torch.from_numpy(batch.image_shape).to(device),
                     torch.from_numpy(data.shape_category[batch.shapes]).to(device),
                     torch.from_numpy(data.query_category[batch.images]).to(device),
                     tau=m.tau, beta1=m.beta1 if m.category_loss else 0.0)
    return loss if penalty is None else loss._replace(total=loss.total + penalty)


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


class CMICTask(Task):
    """CMIC training of `config` in `run_dir` (a new run, or `RunDir(out, resume=True)`'s)."""

    state_format = STATE_FORMAT
    resumable = RESUMABLE_CHANGES
    length_keys = "train.steps or train.epochs"

    def __init__(self, config: TrainConfig, run_dir: RunDir, command: str = "", progress: bool = True):
        self.config = config
        self.run_dir = run_dir
        self.command = command
        self.best: dict | None = None
        self.history: list[dict] = []
        torch.set_num_threads(config.train.threads)
        c = config
        mc = c.model_config
        self.train_data = load_dataset(c.data.train, mc.render_size, mc.query_size, c.data.cache,
                                       c.data.up_axis, progress=progress)
        self.data_key = self.train_data.key
        self.val_data = None
        if c.data.val:
            self.val_data = load_dataset(c.data.val, mc.render_size, mc.query_size, c.data.cache, c.data.up_axis,
                                         categories=self.train_data.categories, progress=progress)
        self.views_index = views_index(c.method.views)
        self.train_views = np.ascontiguousarray(self.train_data.views[:, self.views_index])
        self.steps_per_epoch = steps_per_epoch(self.train_data.num_queries, c.train.batch_size)
        self.total_steps = c.train.total_steps(self.steps_per_epoch)
        self.checkpoint_every = c.train.checkpoint_every
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
        if run_dir.resume:
            run_dir.restore(self)
        else:
            self._initial_weights()
            run_dir.start(self.record())
        self.view_embeddings = self._fixed_view_embeddings()
        self.anchor = self._imagenet_anchor()
        self.feature_anchor = (FeatureAnchor(self.model.query_encoder, c.train.feature_anchor)
                               if c.train.feature_anchor else None)
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

    # ------------------------------------------------------------------ the task's steps

    def train_step(self) -> CMICLoss:
        c = self.config
        batch = sample_batch(self.train_data.query_shape, self.train_data.num_shapes, c.train.batch_size,
                             c.seed, self.step)
        loss = batch_loss(self.model, self.train_data, self.train_views, batch, c,
                          step_rng(c.seed, AUGMENT_STREAM, self.step), self.view_embeddings, self.feature_anchor)
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

    def metrics(self, loss: CMICLoss) -> dict | None:
        if self.step % self.config.train.log_every:
            return None
        line = {"step": self.step, "epoch": self._epoch(), "loss": loss.total.item(),
                "instance": loss.instance.item(), "category": loss.category.item()}
        if self.feature_anchor is not None:
            line["feature_anchor"] = self.feature_anchor.last_penalty
        return line

    def validates_at(self, step: int) -> bool:
        every = self.config.val.every
        if self.val_data is None:
            return False
        if step == 0:
            return not self.history  # a run stopped right after its first validation has it
        return step == self.total_steps or bool(every and step % every == 0)

    def validate(self) -> tuple[dict, str]:
        """Every validation query against every validation shape; best.pt when (top-1, top-k,
        category) improves."""
        c = self.config
        started = time.perf_counter()
        metrics = evaluate(self.model, self.val_data, self.views_index, c.method.mask, c.method.attention, c.val.topk)
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        record = {"step": self.step, "epoch": self._epoch(), **metrics}
        self.history.append(record)
        k = c.val.topk
        improved = self.best is None or _rank(metrics, k) > _rank(self.best, k)
        if improved:
            self.best = record
            save_checkpoint(self.model, self.run_dir.path / "best.pt", self._info(record))
        line = (f"step {self.step}: val top1 {metrics['top1']:.3f} top{k} {metrics[f'top{k}']:.3f} "
                f"category {metrics['category']:.3f}" + (" (best so far, saved best.pt)" if improved else ""))
        return metrics, line

    def export(self, seconds_per_step: float) -> RunSummary:
        """last.pt, with the final validation (when the last step had one) in its info."""
        out = self.run_dir.path
        final_val = self.history[-1] if self.history and self.history[-1]["step"] == self.step else None
        last = save_checkpoint(self.model, out / "last.pt", self._info(final_val))
        best = out / "best.pt"
        return RunSummary(str(out), self.step, self.total_steps, round(seconds_per_step, 4), self.best,
                          str(best) if best.is_file() else None, str(last), self.history)

    # ------------------------------------------------------------------ the run folder's

    def record(self) -> dict:
        return self.config.to_dict()

    def read_record(self, saved: dict) -> dict:
        # read back through TrainConfig: keys added since the run started compare at their defaults
        return TrainConfig.from_dict(saved).to_dict()

    def schedule(self, record: dict):
        train = TrainConfig.from_dict(record).train
        total = train.total_steps(self.steps_per_epoch)
        return lambda step: train.lr_at(step, total)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state()}, "best": self.best, "history": self.history}

    def restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        self.best = payload["best"]
        self.history = list(payload["history"])

    def _epoch(self) -> float:
        return round(self.step / self.steps_per_epoch, 3)

    def _info(self, val: dict | None) -> dict:
        return {
            "trained_by": "ibsr-train",
            "command": self.command,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self._epoch(),
            "train_data": {"path": self.train_data.name, "shapes": self.train_data.num_shapes,
                           "queries": self.train_data.num_queries, "categories": self.train_data.categories},
            "val": val,
            "val_history": list(self.history),
        }

    # ------------------------------------------------------------------ starting weights

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
    task = CMICTask(config, RunDir(out_dir, resume), command=command, progress=progress)
    return Loop(task, progress).run()


def _rank(metrics: dict, k: int) -> tuple:
    return (metrics["top1"], metrics[f"top{k}"], metrics["category"])
