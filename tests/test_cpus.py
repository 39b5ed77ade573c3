"""The usable CPU count: affinity capped by the cgroup quota (ibsr/cpus.py), on fake cgroup files."""

from __future__ import annotations

import os

import pytest

from ibsr import cpus


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "max 100000\n"}, None),  # v2, no quota
    ({"cpu.max": "150000 100000\n"}, 1.5),  # v2, 1.5 CPUs
    ({"cpu.max": "50000 100000"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 unlimited
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),  # v1 under cpu/
    ({"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000"}, 2.0),  # v1 mounted at the root
    ({"cpu.max": "garbage"}, None),
    ({}, None),  # no cgroup files at all
])
def test_cgroup_quota(tmp_path, files, quota):
    for name, text in files.items():
        write(tmp_path, name, text)
    assert cpus.cgroup_quota(tmp_path) == quota


def test_usable_cpus_is_affinity_capped_by_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 8)
    assert cpus.usable_cpus(tmp_path) == 8  # no quota
    write(tmp_path, "cpu.max", "250000 100000")
    assert cpus.usable_cpus(tmp_path) == 2  # 2.5 CPUs of time: two threads, not three
    write(tmp_path, "cpu.max", "20000 100000")
    assert cpus.usable_cpus(tmp_path) == 1  # never below one
    write(tmp_path, "cpu.max", "max 100000")
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 3)
    assert cpus.usable_cpus(tmp_path) == 3


def test_affinity_is_this_process_mask():
    assert cpus.affinity_cpus() == len(os.sched_getaffinity(0))
    assert 1 <= cpus.usable_cpus() <= len(os.sched_getaffinity(0))
