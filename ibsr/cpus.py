"""How many CPUs this process may actually use.

`os.cpu_count()` is the machine's count; a container or a `taskset` may allow far fewer, and
OpenMP teams sized to the machine stall whenever one of their threads is descheduled (issue
12: the same rerank 15-20x slower with two threads on a busy two-core machine). The usable
count is the affinity mask (`sched_getaffinity`, which also reflects cgroup cpusets) capped
by the cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
rounded down, at least 1.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (e.g. 1.5), or None when there is no quota."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "150000 100000"
    if v2 is not None:
        parts = v2.split()
        return _ratio(parts[0], parts[1] if len(parts) > 1 else "100000")
    quota = _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu.cfs_quota_us")
    period = _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    """quota / period, or None for "max", -1 (v1's unlimited) or anything unreadable."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: affinity capped by the cgroup quota, at least 1."""
    cpus = affinity_cpus()
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


class process_pool:
    """`with process_pool(workers) as pool:` a pool of `workers` processes, or None (do the work
    in this process) when workers < 1. forkserver: workers never inherit this process's torch
    threads or CUDA context. Leaving the block cancels work not yet started."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 0:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("forkserver"))
        return self.pool

    def __exit__(self, *exc):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)
