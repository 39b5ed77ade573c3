"""CMIC networks, their input scaling, losses, color transfer and checkpoint I/O (incl. the authors' Jittor files)."""

from ibsr.model.checkpoint import (
    checkpoint_id,
    default_weights_path,
    init_model,
    load_checkpoint,
    load_checkpoint_with_info,
    load_default_model,
    rendering_id,
    save_checkpoint,
)
from ibsr.model.cmic import CMIC
from ibsr.model.color_transfer import color_transfer, lab_to_rgb, rgb_to_lab
from ibsr.model.config import LITE, PAPER, SMALL, ModelConfig
from ibsr.model.inputs import scale_pixels
from ibsr.model.jittor import import_jittor, infer_config, read_jittor_state
from ibsr.model.losses import CMICLoss, category_loss, cmic_loss, instance_loss

__all__ = [
    "CMIC",
    "CMICLoss",
    "ModelConfig",
    "LITE",
    "PAPER",
    "SMALL",
    "category_loss",
    "checkpoint_id",
    "cmic_loss",
    "color_transfer",
    "default_weights_path",
    "import_jittor",
    "infer_config",
    "init_model",
    "instance_loss",
    "lab_to_rgb",
    "load_checkpoint",
    "load_checkpoint_with_info",
    "load_default_model",
    "read_jittor_state",
    "rendering_id",
    "rgb_to_lab",
    "save_checkpoint",
    "scale_pixels",
]
