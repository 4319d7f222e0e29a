"""Thread counts sized to the usable cores: cgroup quotas, affinity, workers, a user's own choice."""

from __future__ import annotations

import torch

from activelab import threads
from activelab.threads import _cgroup_quota, cap_torch_threads, thread_environment, threads_per_worker


def test_a_cgroup_v2_quota_gives_its_whole_cpus_and_max_means_none(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert _cgroup_quota(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert _cgroup_quota(tmp_path) == 1  # half a CPU still runs one thread
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None


def test_a_cgroup_v1_quota_is_read_and_no_quota_is_none(tmp_path):
    assert _cgroup_quota(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(tmp_path) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(tmp_path) is None


def test_the_usable_cpus_are_the_smaller_of_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2)
    assert threads.usable_cpus() == 2
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cpus() == 64


def test_workers_share_the_cores_and_every_library_is_told():
    assert [threads_per_worker(2, workers) for workers in (1, 2, 3)] == [2, 1, 1]
    assert threads_per_worker(16, 4) == 4
    assert set(thread_environment(3).values()) == {"3"} and "OPENBLAS_NUM_THREADS" in thread_environment(3)


def test_torch_is_capped_at_the_usable_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert cap_torch_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert cap_torch_threads() == 2
    finally:
        torch.set_num_threads(before)
