"""`ibsr-train mask`: train the automatic-mask network (`ibsr.model.segmenter.MaskNet`) on the
exact masks of synthetic photos, a task of the loop (`ibsr.train.loop`).

    ibsr-train mask --data data/lite-train --val data/lite-val --out data/runs/mask
    cp data/runs/mask/last.pt ibsr/model/weights/mask.pt

Data: dataset folders as `ibsr-data synth` writes them (queries.jsonl lines with `image` and
`mask`; every photo needs its mask). Each photo and mask is decoded once (worker processes for
large sets), resized to the network's square input (INTER_AREA, as the searcher resizes; the
mask keeps soft 0-255 edges) and cached as uint8 in `<cache>/masks-<key>.npz`, keyed by the
files' contents and the size. The cache goes to the GPU when it fits in a quarter of the free
memory (else it stays in pinned host memory) and every step is augmented on the device:
colour jitter (brightness, contrast, saturation, white balance, some grayscale), then one
affine resample = random resized crop (area 0.35-1, aspect 1/2-2, so the network sees the
squashed photos the searcher's square resize makes) + horizontal flip, photo and mask together.

Loss: BCE + Dice (per photo) on the logits at input resolution, in float32. Adam; the rate
warms up over the first steps, stays at --lr, and decays with a cosine to 0 over the last 30%
of the steps. bf16 autocast on CUDA (and on CPUs with native bf16), cudnn.benchmark,
channels_last. Every random draw comes from a generator seeded by (seed, step), so `--resume`
from `state.pt` continues the same run. The run folder holds config.json (`MaskTrainConfig`'s
record), state.pt (model and optimizer), metrics.jsonl (losses at step 1, every 25 steps and the
last; the validation) and last.pt (the shipped format, float16), whose info carries the
validation IoU measured at the end on --val (the cached input resolution, threshold 0.5), and
whose config carries its certainty floor (`certainty_floor`: below it the searcher searches the
whole photo), measured at the end on 1000 of its training photos.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ibsr.errors import IbsrError
from ibsr.eval.queries import read_queries
from ibsr.geometry.mesh import file_hash
from ibsr.model.inputs import scale_pixels
from ibsr.model.segmenter import (MaskConfig, MaskNet, init_mask_net, load_mask_checkpoint, mask_certainty,
                                  save_mask_checkpoint)
from ibsr.photos.image import load_image, load_mask
from ibsr.train.augment import affines, resample
from ibsr.train.config import MaskTrainConfig
from ibsr.train.data import cache_key, save_npz, worker_pool
from ibsr.train.device import autocast, torch_device
from ibsr.train.loop import Loop, Task
from ibsr.train.run_dir import RunDir

STATE_FORMAT = "ibsr-mask-train-state"
CACHE_VERSION = 1
DECAY_FRACTION = 0.3  # the cosine decay's share of the run
WARMUP_STEPS = 100  # linear warm-up (the decoder starts random on a pretrained encoder)
CROP_AREA = (0.35, 1.0)
CROP_RATIO = (0.5, 2.0)
LOG_EVERY = 25  # steps between metrics lines (and the first and last step's)
FLOOR_PHOTOS = 1000  # training photos the certainty floor is measured on
FLOOR_PERCENTILE = 1.0  # the share (%) of in-domain photos below the floor
# Keys a resumed run may change: its length (if the steps taken keep their rates), where it
# runs, and its checkpoint cadence.
RESUMABLE = frozenset({"steps", "device", "threads", "checkpoint_every", "cache"})


def lr_at(step: int, steps: int, lr: float) -> float:
    """Warm-up, constant, then a cosine to 0 over the last DECAY_FRACTION of `steps`."""
    warmup = min(WARMUP_STEPS, max(1, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_start = steps - int(round(DECAY_FRACTION * steps))
    if step < decay_start:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - decay_start) / max(1, steps - decay_start)))


# --------------------------------------------------------------------------- data


@dataclass
class MaskPhotos:
    images: np.ndarray  # N x 3 x S x S uint8 RGB
    masks: np.ndarray  # N x 1 x S x S uint8, 0-255 (soft edges from the resize)
    sources: list[str] = field(default_factory=list)  # the queries.jsonl files
    key: str = ""  # of the files' contents and the size (the cache's): equal keys, equal photos


def load_mask_photos(folders: list, size: int, cache_dir, progress: bool = True) -> MaskPhotos:
    """Every (photo, exact mask) of the dataset folders, resized to size x size, cached once."""
    files, sources = [], []
    for folder in folders:
        queries_file = Path(folder) / "queries.jsonl"
        if not queries_file.is_file():
            raise IbsrError("no queries.jsonl in the dataset folder; make one with `ibsr-data synth --out DIR`", folder)
        for q in read_queries(queries_file):
            if q.mask is None:
                raise IbsrError(f"line {q.line}: {q.image.name} has no mask; mask training needs every photo's "
                                "exact mask (as `ibsr-data synth` writes)", queries_file)
            files.append((q.image, q.mask))
        sources.append(str(queries_file))
    key = cache_key({"v": CACHE_VERSION, "kind": "masks", "size": size,
                     "files": [[file_hash(i), file_hash(m)] for i, m in files]})
    path = Path(cache_dir) / f"masks-{key}.npz"
    if path.is_file():
        cached = np.load(path)
        return MaskPhotos(cached["images"], cached["masks"], sources, key)
    images = np.empty((len(files), 3, size, size), np.uint8)
    masks = np.empty((len(files), 1, size, size), np.uint8)
    decode = partial(_decode_photo, size=size)
    with worker_pool(len(files)) as pool:
        decoded = pool.map(decode, files, chunksize=32) if pool else map(decode, files)
        for i, (image, mask) in enumerate(tqdm(decoded, total=len(files), unit="photo", disable=not progress,
                                               desc=f"decoding {len(files)} photos and masks (once)",
                                               file=sys.stderr)):
            images[i], masks[i, 0] = image, mask
    save_npz(path, images=images, masks=masks)
    return MaskPhotos(images, masks, sources, key)


def _decode_photo(files: tuple[Path, Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The searcher's decoding (EXIF, modes) and resize; 3 x S x S RGB and S x S mask, uint8."""
    rgb, _ = load_image(files[0])
    mask = load_mask(files[1], rgb.shape[:2]).astype(np.uint8) * 255
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return rgb.transpose(2, 0, 1), mask


# --------------------------------------------------------------------------- augmentation, loss


def augment(images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 3 x S x S and B x 1 x S x S uint8 (on the device) -> photo in [-1, 1], mask in [0, 1]."""
    b = images.shape[0]
    x = images.float() / 255.0
    target = masks.float() / 255.0

    def draw(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.astype(np.float32)).to(x.device)

    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
    saturation = draw(rng.uniform(0.5, 1.5, (b, 1, 1, 1)) * (rng.random((b, 1, 1, 1)) >= 0.1))  # 10% gray
    x = gray + (x - gray) * saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * draw(rng.uniform(0.6, 1.4, (b, 1, 1, 1))) + mean  # contrast
    brightness, gains = draw(rng.uniform(0.6, 1.4, (b, 1, 1, 1))), draw(rng.uniform(0.85, 1.15, (b, 3, 1, 1)))
    x = (x * brightness * gains).clamp_(0.0, 1.0)  # brightness, white balance
    theta = affines(rng, b, CROP_AREA, CROP_RATIO, 0.0, 0.5)
    both = resample(torch.cat([x, target], dim=1), theta, fill=0.0)  # crops stay inside the frame
    return both[:, :3] * 2.0 - 1.0, both[:, 3:].clamp(0.0, 1.0)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """BCE + Dice (mean over photos), in float32; returns (loss, {"bce", "dice"} floats)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    dice = dice.mean()
    return bce + dice, {"bce": bce.detach(), "dice": dice.detach()}


@torch.no_grad()
def mask_iou(model: MaskNet, photos: MaskPhotos, device: torch.device, batch_size: int = 64) -> dict:
    """IoU of the thresholded prediction with the (thresholded) exact mask, per photo, at the
    cached resolution: {"photos", "iou_mean", "iou_median", "iou_below_0.5"}."""
    was_training = model.training
    model.eval()
    ious = []
    for start in range(0, len(photos.images), batch_size):
        x = scale_pixels(torch.from_numpy(photos.images[start:start + batch_size]).to(device))
        with autocast(device, "auto"):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        pred = logits.float() >= 0.0  # sigmoid >= 0.5
        truth = torch.from_numpy(photos.masks[start:start + batch_size]).to(device) >= 128
        inter = (pred & truth).sum(dim=(1, 2, 3)).float()
        union = (pred | truth).sum(dim=(1, 2, 3)).float()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).cpu())
    model.train(was_training)
    iou = torch.cat(ious).numpy()
    return {"photos": len(iou), "iou_mean": round(float(iou.mean()), 4), "iou_median": round(float(np.median(iou)), 4),
            "iou_below_0.5": round(float((iou < 0.5).mean()), 4)}


@torch.no_grad()
def certainty_floor(model: MaskNet, images: np.ndarray, device: torch.device, seed: int = 0,
                    photos: int = FLOOR_PHOTOS, batch_size: int = 64) -> float:
    """The `MaskConfig.certainty_floor` of a network: the FLOOR_PERCENTILE-th percentile of its
    `mask_certainty` over up to `photos` of `images` (N x 3 x S x S uint8, photos like the ones it
    trained on, un-augmented, in float32 as the searcher runs it): about 1% of photos from its own
    domain then go whole, and photos it does not understand far more often."""
    pick = np.sort(np.random.default_rng([seed, 1]).choice(len(images), min(photos, len(images)), replace=False))
    was_training = model.training
    model.eval()
    certainties = []
    for start in range(0, len(pick), batch_size):
        x = scale_pixels(torch.from_numpy(images[pick[start:start + batch_size]]).to(device))
        prob = torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).float()).cpu()
        certainties += [mask_certainty(p) for p in prob]
    model.train(was_training)
    return round(float(np.percentile(certainties, FLOOR_PERCENTILE)), 4)


# --------------------------------------------------------------------------- the run


@dataclass
class MaskRunSummary:
    out: str
    step: int
    steps: int
    seconds_per_step: float
    device: str
    train_photos: int
    val: dict | None
    last_checkpoint: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class MaskTask(Task):
    """Mask network training of `config` in `run_dir` (a new run, or `RunDir(out, resume=True)`'s)."""

    label = "training mask"
    state_format = STATE_FORMAT
    resumable = RESUMABLE
    length_keys = "--steps"

    def __init__(self, config: MaskTrainConfig, run_dir: RunDir, command: str = "", progress: bool = True):
        config.check()
        self.config, self.run_dir, self.command = config, run_dir, command
        self.total_steps, self.checkpoint_every = config.steps, config.checkpoint_every
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch_device(config.device)
        self.train_photos = load_mask_photos(config.data, config.size, config.cache, progress)
        self.data_key = self.train_photos.key
        self.val_photos = load_mask_photos([config.val], config.size, config.cache, progress) if config.val else None
        self.images = _place(self.train_photos.images, self.device)
        self.masks = _place(self.train_photos.masks, self.device)
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
        self.model = self.start_model(resume=run_dir.resume)
        self.model.to(self.device, memory_format=torch.channels_last).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        if run_dir.resume:
            run_dir.restore(self)
        else:
            run_dir.start(self.record())

    def start_model(self, resume: bool) -> MaskNet:
        """The network training starts from: the --init checkpoint (fine-tuning a shipped mask on
        new photos keeps what it learnt, at a CPU's budget), else ImageNet + a seeded decoder. A
        resumed run loads its own state over it, so nothing is read then."""
        c = self.config
        if not c.init or resume:
            return init_mask_net(MaskConfig(size=c.size), c.seed, imagenet=not resume)
        model, _ = load_mask_checkpoint(c.init)
        if model.config.size != c.size:
            raise IbsrError(f"this --init network takes {model.config.size} px photos, the run asks for --size "
                            f"{c.size}; pass --size {model.config.size}", c.init)
        return model

    def train_step(self) -> dict[str, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng([c.seed, self.step])
        n = len(self.images)
        idx = torch.from_numpy(rng.choice(n, c.batch_size, replace=n < c.batch_size)).to(self.images.device)
        x, target = augment(self.images[idx].to(self.device, non_blocking=True),
                            self.masks[idx].to(self.device, non_blocking=True), rng)
        with autocast(self.device, "auto"):
            logits = self.model(x.contiguous(memory_format=torch.channels_last))
        loss, parts = mask_loss(logits, target)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, c.steps, c.lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.detach(), **parts}

    def metrics(self, losses: dict[str, torch.Tensor]) -> dict | None:
        if self.step % LOG_EVERY and self.step not in (1, self.total_steps):
            return None
        return {"step": self.step, **{k: round(v.item(), 5) for k, v in losses.items()}}

    def export(self, seconds_per_step: float) -> MaskRunSummary:
        """The IoU on --val, then last.pt (the shipped format) with it in its info."""
        c = self.config
        val = mask_iou(self.model, self.val_photos, self.device) if self.val_photos is not None else None
        if val is not None:
            self.run_dir.log({"step": self.step, "val": val})
        floor = certainty_floor(self.model, self.train_photos.images, self.device, c.seed)
        self.model.config = replace(self.model.config, certainty_floor=floor)
        info = {"trained_by": "ibsr-train mask", "command": self.command, "config": c.to_dict(), "step": self.step,
                "train_data": {"queries": self.train_photos.sources, "photos": len(self.train_photos.images)},
                "val": val, "seconds_per_step": round(seconds_per_step, 4), "device": str(self.device)}
        last = save_mask_checkpoint(self.model, self.run_dir.path / "last.pt", info)
        return MaskRunSummary(str(self.run_dir.path), self.step, c.steps, round(seconds_per_step, 4),
                              str(self.device), len(self.train_photos.images), val, str(last))

    # ------------------------------------------------------------------ the run folder's

    def record(self) -> dict:
        return self.config.to_dict()

    def read_record(self, saved: dict) -> dict:
        return {**MaskTrainConfig().to_dict(), **saved}  # keys added since the run started at their defaults

    def schedule(self, record: dict):
        return lambda step: lr_at(step, record["steps"], record["lr"])

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])


def train_mask(config: MaskTrainConfig, out_dir, resume: bool = False, command: str = "",
               progress: bool = True) -> MaskRunSummary:
    """Train (or resume) a mask network run; returns its summary."""
    task = MaskTask(config, RunDir(out_dir, resume), command=command, progress=progress)
    return Loop(task, progress).run()


def _place(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The uint8 cache on the GPU when it takes under a quarter of its free memory, else pinned
    host memory (batches then travel each step); on the CPU as it is."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    free, _ = torch.cuda.mem_get_info(device)
    return tensor.to(device) if tensor.numel() < free / 4 else tensor.pin_memory()
