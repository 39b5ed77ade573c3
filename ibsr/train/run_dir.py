"""A training run's folder (`--out`), kept the same way by every `ibsr-train` training:

    config.json     the run's config, every default filled in (the task's `record()`)
    state.pt        resumable state: {"format", "version", "config", "step", "data"} and the
                    task's own (model, optimizer, ...), replaced atomically
    metrics.jsonl   one JSON line per logged step and one per validation ({"step", "val"})

and the task's checkpoints beside them (best.pt, last.pt). A new run refuses a folder that holds
one (state.pt), `--resume` a folder that does not. A resumed run continues the same run: the
same config but for the keys its task lets change (length, cadence, threads, device), not past
the new end, every step already taken at the rate it was taken at, and the same training data
(by the contents of its files; states saved before the data was recorded skip that check).
Every random draw is seeded by (seed, step), so the resumed run's steps are the uninterrupted
run's.

While the loop runs (`stopping()`), SIGINT (Ctrl-C) and SIGTERM (`kill PID`) ask it to stop: it
finishes the step it is taking, saves the state and ends with a one-line message. A second
signal gets the handler that was there before (Ctrl-C: KeyboardInterrupt at once; SIGTERM: the
process ends), for a step that hangs; the state saved last is then what `--resume` continues.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Iterator

import torch

from ibsr.errors import IbsrError
from ibsr.files import atomic_path

STATE_VERSION = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunDir:
    """`RunDir(out, resume)` checks the folder at once (before a task loads its data); the task
    then `restore`s from it or `start`s it, and the loop `log`s and `save_state`s into it."""

    def __init__(self, path, resume: bool = False):
        self.path = Path(path)
        self.resume = resume
        self.stop_requested = False
        if resume and not self.state_path.is_file():
            raise IbsrError("nothing to resume: no state.pt in the run folder; drop --resume to start", self.path)
        if not resume and self.state_path.is_file():
            raise IbsrError("run folder already holds a run (state.pt); pass --resume to continue it, "
                            "or choose another --out", self.path)

    @property
    def state_path(self) -> Path:
        return self.path / "state.pt"

    def start(self, record: dict) -> None:
        """A new run: the folder, and its config.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(json.dumps(record, indent=2) + "\n")

    def log(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_state(self, task) -> None:
        payload = {"format": task.state_format, "version": STATE_VERSION, "config": task.record(),
                   "step": task.step, "data": task.data_key, **task.state()}
        # An open file: torch.save's archive name does not depend on the temporary name.
        with atomic_path(self.state_path, parents=False) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)

    def restore(self, task) -> None:
        """Continue the run in `task` (its step, then its own state), after the checks that make
        the resumed run the uninterrupted one."""
        payload = self._read_state(task.state_format, task.device)
        self._check_same_run(task, payload)
        task.step = int(payload["step"])
        task.restore(payload)

    @contextlib.contextmanager
    def stopping(self) -> Iterator["RunDir"]:
        """SIGINT and SIGTERM set `stop_requested` while the block runs (see the module's text).
        Signals reach the main thread only: elsewhere nothing is installed."""
        previous = {}

        def request(signum, frame):
            self.stop_requested = True
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        try:
            for sig in STOP_SIGNALS:
                previous[sig] = signal.getsignal(sig) or signal.SIG_DFL  # None: not set from Python
                signal.signal(sig, request)
        except ValueError:  # not the main thread
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _read_state(self, state_format: str, device) -> dict:
        path = self.state_path
        try:
            payload = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            raise IbsrError(f"unreadable training state ({type(e).__name__}); start a new run", path) from None
        if not isinstance(payload, dict) or payload.get("format") != state_format:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise IbsrError(f"not the training state this command resumes ({found!r}, not {state_format!r}); "
                            "start a new run", path)
        if payload.get("version") != STATE_VERSION:
            raise IbsrError(f"training state version {payload.get('version')!r} is not supported", path)
        return payload

    def _check_same_run(self, task, payload: dict) -> None:
        path = self.state_path
        saved = task.read_record(payload["config"])
        changed = config_changes(saved, task.record()) - task.resumable
        if changed:
            raise IbsrError(f"settings differ from the run's in {', '.join(sorted(changed))}; only "
                            f"{', '.join(sorted(task.resumable))} may change on --resume", path)
        if payload.get("data") and payload["data"] != task.data_key:
            raise IbsrError("the training data changed since the run started (its files' contents differ); "
                            "resume with the data it started with, or start a new run", path)
        done = int(payload["step"])
        if done > task.total_steps:
            raise IbsrError(f"the run is already at step {done}, past this config's {task.total_steps} steps; "
                            f"raise {task.length_keys} to continue", path)
        old_rate, new_rate = task.schedule(saved), task.schedule(task.record())
        moved = next((step for step in range(done) if old_rate(step) != new_rate(step)), None)
        if moved is not None:
            raise IbsrError(f"the new learning-rate schedule changes the rate of step {moved}, which the run "
                            f"already took; keep the rates of its first {done} steps (a decay may start at "
                            f"step {done} or later)", path)


def config_changes(old: dict, new: dict, prefix: str = "") -> set[str]:
    """The dotted names of the keys whose values differ (nested dicts compared key by key)."""
    changes = set()
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes |= config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.add(f"{prefix}{key}")
    return changes
