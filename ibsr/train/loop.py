"""The one training loop of `ibsr-train`: `Loop(task).run()` takes a `Task`'s steps, from where
its run folder (`ibsr.train.run_dir.RunDir`) stands to its last one, then exports it.

Each step: the task's `train_step`; its metrics line when it has one (not every step: reading a
loss waits for the GPU); its validation when one is due; the state every `checkpoint_every`
steps and at the end. A stop request (Ctrl-C, SIGTERM) ends the loop after the step it is
taking, with the state saved. Tasks: CMIC training (`ibsr.train.cmic`, also what `ibsr-train
adapt` runs) and the mask network (`ibsr.train.mask`).
"""

from __future__ import annotations

import abc
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

from ibsr.errors import IbsrError
from ibsr.train.run_dir import RunDir


class Task(abc.ABC):
    """One kind of training, as the loop and its run folder see it.

    Built with its `RunDir`, a task loads its data and builds its model and optimizer, then
    either `run_dir.restore(self)`s the run's state or `run_dir.start(self.record())`s a new run.
    Adding a kind of training = one subclass: these attributes and methods, nothing of the
    folder, the state file, the resume checks or the signals."""

    label = "training"  # the progress bar's
    state_format: str  # state.pt's "format": the state of another kind of run is refused
    resumable: frozenset = frozenset()  # config keys (dotted) a resumed run may change
    length_keys: str  # the setting(s) that make a run longer, as messages name them

    run_dir: RunDir
    device: torch.device
    step: int = 0  # optimizer steps taken
    total_steps: int
    checkpoint_every: int
    data_key: str = ""  # of the training data's contents: a resumed run needs the same

    @abc.abstractmethod
    def record(self) -> dict:
        """The config as the run folder stores it (config.json, state.pt)."""

    def read_record(self, saved: dict) -> dict:
        """A stored record, comparable with `record()` (keys added since, at their defaults)."""
        return saved

    @abc.abstractmethod
    def schedule(self, record: dict) -> Callable[[int], float]:
        """The learning rate of each step under a (read) record's settings."""

    @abc.abstractmethod
    def train_step(self):
        """One optimizer step (the one numbered `step`, which it then increments); returns its
        losses, in whatever form `metrics` reads."""

    @abc.abstractmethod
    def metrics(self, losses) -> dict | None:
        """The metrics.jsonl line of the step just taken ({"step", "loss", ...}), or None."""

    def validates_at(self, step: int) -> bool:
        """Whether a validation is due after `step` steps (0: before the first)."""
        return False

    def validate(self) -> tuple[dict, str]:
        """(metrics, a line for the terminal) of a validation at the current step."""
        raise NotImplementedError

    @abc.abstractmethod
    def state(self) -> dict:
        """What state.pt holds besides the run folder's keys (model, optimizer, ...)."""

    @abc.abstractmethod
    def restore(self, payload: dict) -> None:
        """Take back `state()` from a checked state.pt payload (`step` is already set)."""

    @abc.abstractmethod
    def export(self, seconds_per_step: float):
        """After the last step: the run's checkpoint(s); returns the run's summary."""


class Loop:
    """`Loop(task).run()`; `step_seconds` holds how long each `train_step` of this run took."""

    def __init__(self, task: Task, progress: bool = True):
        self.task = task
        self.progress = progress
        self.step_seconds: list[float] = []
        self._saved_at: int | None = None

    def run(self):
        """The steps left, then the task's export (its summary). Stopped by a signal: the state
        is saved and an `IbsrError` says how to continue."""
        task, run_dir = self.task, self.task.run_dir
        started, first_step = time.perf_counter(), task.step
        bar = tqdm(total=task.total_steps, initial=task.step, unit="step", desc=task.label, disable=not self.progress,
                   file=sys.stderr, mininterval=5 if not sys.stderr.isatty() else 0.1)
        with run_dir.stopping():
            if task.step == 0 and task.validates_at(0):
                self._validate(bar)
            while task.step < task.total_steps and not run_dir.stop_requested:
                self._step(bar)
        bar.close()
        if task.step < task.total_steps:
            self._save()
            raise IbsrError(f"interrupted at step {task.step}/{task.total_steps}; state saved in "
                            f"{run_dir.state_path}, continue with --resume")
        return task.export((time.perf_counter() - started) / max(1, task.step - first_step))

    def _step(self, bar) -> None:
        task = self.task
        started = time.perf_counter()
        losses = task.train_step()
        self.step_seconds.append(time.perf_counter() - started)
        bar.update(1)
        record = task.metrics(losses)
        if record is not None:
            task.run_dir.log(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        if task.validates_at(task.step):
            self._validate(bar)
        if task.step == task.total_steps or task.step % task.checkpoint_every == 0:
            self._save()

    def _validate(self, bar) -> None:
        metrics, line = self.task.validate()
        self.task.run_dir.log({"step": self.task.step, "val": metrics})
        bar.write(line, file=sys.stderr)

    def _save(self) -> None:
        if self._saved_at != self.task.step:
            self.task.run_dir.save_state(self.task)
            self._saved_at = self.task.step
