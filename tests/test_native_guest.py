"""The native engine's guest: vCPUs as execution contexts, dom0's vCPUs, halts and kicks,
the interrupt outside the ring lock, blk-mq's tags, exactly once at 64 jobs with every lock."""

import numpy as np
import pytest

from xbq.engines.native import runner
from xbq.engines.native.locks import LOCK_KINDS
from xbq.engines.native.runner import NativeConfig, _Point, run_point
from xbq.errors import XbqError
from xbq.workload.placement import job_placement

pytestmark = pytest.mark.threads
SHORT = {"duration_s": 0.3, "warmup_s": 0.05, "stall_s": 5.0}


def _assert_exactly_once(row):
    assert row["submitted"] == row["completed"] > 0
    assert row["lost"] == 0 and row["duplicated"] == 0


def test_64_jobs_on_4_vcpus_run_4_plus_d_threads(monkeypatch):
    started = []
    real = runner._thread_main

    def counting(fn, args, t, errors, ctl, cpu):
        started.append(fn.__name__ if hasattr(fn, "__name__") else str(fn))
        return real(fn, args, t, errors, ctl, cpu)

    monkeypatch.setattr(runner, "_thread_main", counting)
    row = run_point(NativeConfig(mode="mq", jobs=64, vcpus=4, queues=4, dom0_vcpus=2,
                                 iodepth=4, **SHORT))
    _assert_exactly_once(row)
    assert sorted(started) == ["dom0_loop"] * 2 + ["vcpu_loop"] * 4
    assert row["threads"] == 6 and row["host_cpus"] >= 1
    assert row["oversubscribed"] == (6 > row["host_cpus"])
    assert row["pinned"] == (not row["oversubscribed"])


@pytest.mark.parametrize("mode", ["sq", "mq"])
@pytest.mark.parametrize("lock", list(LOCK_KINDS))
def test_64_jobs_exactly_once_and_data_with_every_lock(mode, lock):
    """With test mode on: the interrupt never ran on a vCPU holding a ring lock."""
    row = run_point(NativeConfig(mode=mode, jobs=64, vcpus=16, queues=4, dom0_vcpus=4,
                                 iodepth=4, device="ramdisk", lock=lock, check=True, **SHORT))
    _assert_exactly_once(row)
    assert row["data_verified"] and row["write_iops"] > 0


def test_test_mode_catches_an_interrupt_inside_the_ring_lock():
    """The test of the assertion: the hook enters the interrupt path under the lock."""
    cfg = NativeConfig(mode="mq", jobs=2, vcpus=2, queues=2, iodepth=4, check=True,
                       inject=("irq_in_lock", 30), **SHORT)
    with pytest.raises(XbqError, match=r"the interrupt of ring \d ran while this vCPU held "
                                       r"the lock of ring \d \(test mode\)") as err:
        run_point(cfg)
    assert "\n" not in str(err.value)


def test_idle_vcpus_halt_and_are_kicked():
    """One job on 4 vCPUs: three vCPUs have nothing to run and halt nearly all the time; the
    busy one's job sleeps in io_getevents and is woken by its completions."""
    row = run_point(NativeConfig(mode="mq", jobs=1, vcpus=4, queues=4, dom0_vcpus=4,
                                 iodepth=8, **SHORT))
    _assert_exactly_once(row)
    assert row["util_vcpu_halted"] > 0.5 and row["vcpu_halts"] > 0
    assert row["vcpu_kicks"] > 0 and row["io_wait_per_req"] > 0
    for g in ("vcpu", "dom0"):  # shares of one window: each in [0, 1], busy + halted <= 1
        busy, halted = row[f"util_{g}_busy"], row[f"util_{g}_halted"]
        assert 0 <= busy <= 1.05 and 0 <= halted <= 1.05 and busy + halted <= 1.1
    assert row["util_vcpu_spin"] <= row["util_vcpu_busy"]


def test_one_rings_tags_put_jobs_to_sleep():
    """sq: 8 jobs x 16 I/Os want 128 requests; blkfront's one queue has 32 tags
    (BLK_RING_SIZE), so jobs sleep in blk_mq_get_tag and switch on their vCPUs."""
    row = run_point(NativeConfig(mode="sq", jobs=8, vcpus=2, iodepth=16, dom0_vcpus=1,
                                 **SHORT))
    _assert_exactly_once(row)
    assert row["nr_ents"] == 32 and row["tag_wait_per_req"] > 0
    assert row["ctx_per_req"] > 0 and row["ring_full"] == 0


@pytest.mark.parametrize("unpinned", [False, True])
def test_job_placement_is_the_twins(unpinned):
    cfg = NativeConfig(mode="mq", jobs=24, vcpus=8, queues=8, job_placement=unpinned, seed=5)
    pt = _Point(cfg)
    want = job_placement(24, 8, 5 * 1_000_003, unpinned)
    assert np.array_equal(pt.job_vcpu, want)
    assert np.array_equal(pt.run.jobs["ring"], pt.qmap[want])
    on = [sorted(pt.run.vjobs[v][pt.run.vjobs[v] >= 0].tolist()) for v in range(8)]
    assert on == [np.flatnonzero(want == v).tolist() for v in range(8)]
