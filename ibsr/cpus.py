"""How many CPUs this process may actually use.

`os.cpu_count()` is the machine's count; a container or a `taskset` may allow far fewer, and
OpenMP teams sized to the machine stall whenever one of their threads is descheduled (the
rerank many times slower on a busy machine: benchmarks/RESULTS.md, "Thread cliffs and
precision by CPU"). The usable count is the affinity mask (`sched_getaffinity`, which also
reflects cgroup cpusets) capped by the cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`
/ `cpu.cfs_period_us`), rounded down, at least 1.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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


# ---------------------------------------------------------------- the torch worker pool
#
# Why not one OpenMP team of N threads: every parallel region ends at a barrier, so when one
# thread of the team is descheduled (another process holds its core) all the others wait for
# it, region after region (benchmarks/RESULTS.md, "Thread cliffs and precision by CPU").
# Instead each CPU-heavy call (rerank, encoders) is cut into many independent chunks that a
# small pool of *single-threaded* workers takes one at a time (Python threads: torch releases
# the GIL inside its ops). A descheduled worker holds up only its own chunk while the others
# take the next ones. Results are combined in chunk order and each chunk is computed by one
# thread, so they are the same bits for any number of workers.
#
# A call with a single item (one photo, one mask, a rerank of one chunk: what a lone search
# makes) runs in the calling thread whenever a worker's slot is free, instead of being handed
# to a worker: handed over, a lone search took 2-4 ms longer (of ~24 ms, on a 2-core VM), far
# more than the hand-over itself (benchmarks/RESULTS.md, "A lone search in the calling
# thread"). The slots (a semaphore of the pool's size, held by workers and such callers alike)
# keep the heavy work to one thread per usable CPU, as before.

TORCH_WORKERS_ENV = "IBSR_THREADS"  # overrides the pool size (e.g. 1 for a strictly serial run)

_pool: ThreadPoolExecutor | None = None
_slots: threading.Semaphore | None = None  # one per worker: who may compute now (see above)
_pool_size: int | None = None
_pool_lock = threading.Lock()
_in_worker = threading.local()


def _forget_pool_in_child() -> None:  # a forked child has none of the parent's threads
    global _pool, _slots, _pool_lock
    _pool, _slots, _pool_lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def torch_workers() -> int:
    """Workers of the torch pool: $IBSR_THREADS, else the usable CPUs capped by
    $OMP_NUM_THREADS when set (Ray sets it to the CPUs it gave an actor)."""
    explicit = os.environ.get(TORCH_WORKERS_ENV, "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            from ibsr.errors import IbsrError

            raise IbsrError(f"${TORCH_WORKERS_ENV} must be a whole number of threads >= 1, not {explicit!r}")
        return int(explicit)
    cpus = usable_cpus()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cpus, int(omp))) if omp.isdigit() and int(omp) > 0 else cpus


def set_torch_workers(workers: int | None) -> None:
    """Size the pool (None: `torch_workers()`); ibsr-serve's --threads. Takes effect at once."""
    global _pool, _slots, _pool_size
    with _pool_lock:
        _pool_size = workers
        old, _pool, _slots = _pool, None, None
    if old is not None:
        old.shutdown(wait=False)


def _single_threaded() -> None:
    import torch

    torch.set_num_threads(1)  # per thread (OpenMP and MKL): this worker never starts a team
    _in_worker.active = True


def _get_pool() -> tuple[ThreadPoolExecutor, threading.Semaphore]:
    global _pool, _slots
    with _pool_lock:
        if _pool is None:
            size = _pool_size or torch_workers()
            _pool = ThreadPoolExecutor(size, thread_name_prefix="ibsr-torch", initializer=_single_threaded)
            _slots = threading.Semaphore(size)
        return _pool, _slots


def pool_size() -> int:
    return _pool_size or torch_workers()


def parallel_map(fn, items):
    """fn(x) for each of items, computed by the single-threaded torch workers; an iterator
    that yields the results in item order as they are ready (consume it to the end).

    Each worker takes the next item when it finishes one (dynamic scheduling): give many more
    items than workers so that a descheduled worker delays only the item it holds. A single
    item runs in the calling thread when a worker's slot is free (see above: the hand-over
    costs more than it gives). Called from a worker, or from such a call (nested), it runs the
    items inline, in that thread. The caller's grad mode applies in the workers; autocast
    (also per thread) does not: enter it inside `fn`. The calling thread is left with one
    intra-op thread for its own torch ops (the workers hold the CPUs; an OpenMP team there
    would stall as described above)."""
    import torch  # here, not at the top: render workers import this module without torch

    items = list(items)
    if getattr(_in_worker, "active", False):
        return map(fn, items)
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    pool, slots = _get_pool()
    # (not under the caller's autocast: the workers never run under it, and the bits must not
    # depend on where the item ran)
    if len(items) == 1 and not torch.is_autocast_enabled("cpu") and slots.acquire(blocking=False):
        try:
            _in_worker.active = True  # its nested calls run here too: a worker would wait for this slot
            return iter([fn(items[0])])
        finally:
            _in_worker.active = False
            slots.release()
    grad = torch.is_grad_enabled()

    def run(item):  # grad mode is per thread: carry the caller's (e.g. torch.no_grad) over
        with slots, torch.set_grad_enabled(grad):
            return fn(item)

    return pool.map(run, items)
