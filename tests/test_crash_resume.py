"""SIGKILL a build at many moments, resume it, and compare with an uninterrupted build."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from ibsr.index.snapshot import IndexSnapshot


def start_build(catalog, index, weights):
    cmd = [sys.executable, "-m", "ibsr.cli.index", "build", str(catalog), "--index", str(index),
           "--weights", str(weights), "--batch-size", "1", "--workers", "0", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


def commits(index) -> int:
    """The table's latest version number: it only grows (a count of the version files would
    not: the build's compaction removes old ones). Lance names a manifest by its version or,
    in newer releases, by 2^64 - 1 - version (so that a listing starts at the newest)."""
    versions = index / "shapes.lance" / "_versions"
    names = [p.name.split(".")[0] for p in versions.iterdir()] if versions.is_dir() else []
    numbers = [int(n) for n in names if n.isdigit()]
    return max((2**64 - 1 - n if n >= 2**63 else n for n in numbers), default=0)


def wait_for_commit(proc, index, timeout=60.0) -> None:
    """Until the build commits one more batch (or ends): kills then land mid-build."""
    start, deadline = commits(index), time.monotonic() + timeout
    while commits(index) == start and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def test_killed_builds_resume_to_the_same_index(tmp_path, catalog, built_index, tiny_weights):
    index = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    batch_seconds = None  # how long one batch takes on this machine, measured once
    for round_no in range(8):
        proc = start_build(catalog, index, tiny_weights)
        if round_no == 0:
            time.sleep(0.3)  # killed while starting up, before anything is written
        elif round_no <= 2:
            wait_for_commit(proc, index)  # right after a commit: three kills whatever the machine's speed
        else:
            wait_for_commit(proc, index)
            if batch_seconds is None:
                started = time.monotonic()
                wait_for_commit(proc, index)
                batch_seconds = time.monotonic() - started
            # then at a random moment of the next batch (a fixed window spanned several batches
            # on a fast machine, and the build finished before enough kills)
            time.sleep(rng.uniform(0.0, batch_seconds))
        if proc.poll() is not None:  # finished before the kill: the build is complete
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = start_build(catalog, index, tiny_weights)
    assert final.wait() == 0, final.stderr.read().decode()
    assert kills >= 3

    got, want = IndexSnapshot.open(index), IndexSnapshot.open(built_index)
    assert got.shape_ids == want.shape_ids  # none missing, none duplicated
    assert got.categories == want.categories
    order = {s: i for i, s in enumerate(got.shape_ids)}
    for j, shape_id in enumerate(want.shape_ids):
        np.testing.assert_allclose(got.views[order[shape_id]].astype(np.float32),
                                   want.views[j].astype(np.float32), atol=2e-3)
