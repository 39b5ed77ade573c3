"""Training (`ibsr-train`): CMIC training (ICCV 2021, as in DESIGN.md "The method"), the mask
network, adaptation to a catalog. One TOML schema (`config.py`), cached data, batches of unique
shapes, augmentation, and one loop (`loop.py`) that drives a task (`cmic.py`, `mask.py`) in a
resumable run folder (`run_dir.py`).

    from ibsr.train import load_config, train
    summary = train(load_config("configs/small.toml"), "runs/small")

    from ibsr.train.adapt import adapt   # `ibsr-train adapt`
    from ibsr.train.config import AdaptOptions
    report = adapt("my_catalog/", "adapted.pt", AdaptOptions(minutes=10))
"""

from ibsr.train.batch import Batch, make_batch, sample_batch, steps_per_epoch
from ibsr.train.cmic import CMICTask, RunSummary, batch_loss, train
from ibsr.train.config import TrainConfig, load_config, views_index
from ibsr.train.data import Dataset, load_dataset
from ibsr.train.evaluate import batch_scores, evaluate, evaluate_checkpoint, retrieval_metrics
from ibsr.train.loop import Loop, Task
from ibsr.train.run_dir import RunDir

__all__ = [
    "Batch",
    "CMICTask",
    "Dataset",
    "Loop",
    "RunDir",
    "RunSummary",
    "Task",
    "TrainConfig",
    "batch_loss",
    "batch_scores",
    "evaluate",
    "evaluate_checkpoint",
    "load_config",
    "load_dataset",
    "make_batch",
    "retrieval_metrics",
    "sample_batch",
    "steps_per_epoch",
    "train",
    "views_index",
]
