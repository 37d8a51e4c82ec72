"""The twin's mechanisms of issue 13: blk-mq tag sleeps, vCPU wake-ups through Xen, backend
pools shared by every ring or one per ring, blkfront's lock per ring or per device, and fio
jobs the guest scheduler places at random."""

import numpy as np
import pytest

from xbq.engines.des.params import DesParams
from xbq.engines.des.simulate import simulate

BASE = DesParams(be_shared_lock_ns=1500.0)


def run(mode, jobs, p, **kw):
    kw.setdefault("queues", 16 if mode == "mq" else 1)
    kw.setdefault("duration", 0.01)
    return simulate(mode, [jobs], params=p, quiet=True, **kw).iloc[0]


def test_with_tags_no_request_waits_on_a_stopped_queue():
    # 16 jobs x iodepth 64 against 32 tags a ring: without tag sleeps most requests find
    # the ring full and park; with them a job sleeps for a tag instead, and since a tag is
    # a ring slot (no I/O is split with indirect descriptors) none ever parks
    off = run("mq", 16, BASE)
    on = run("mq", 16, BASE.replace(tag_wait=1.0), duration=0.05)
    assert off["parked_per_req"] > 0.5 and off["tag_wait_per_req"] == 0.0
    assert on["parked_per_req"] == 0.0
    assert on["tag_wait_per_req"] > 0.0
    assert on["max_ring_occupancy"] <= on["ring_size"]
    # an I/O holds its tag from submission to completion: at most 16 x 32 in the system
    assert on["little_L"] <= 16 * 32
    assert on["little_L"] == pytest.approx(on["little_XW"], rel=0.02)


def test_no_tag_sleeps_while_every_io_has_a_tag():
    # 4 jobs x iodepth 8 = 32 I/Os on one ring of 32 slots (mq1): never short of a tag
    r = run("mq1", 4, BASE.replace(tag_wait=1.0), iodepth=8)
    assert r["tag_wait_per_req"] == 0.0
    # the legacy queue holds 128 requests: 2 jobs x 64 fit, 4 x 64 do not
    assert run("sq", 2, BASE.replace(tag_wait=1.0))["tag_wait_per_req"] == 0.0
    assert run("sq", 4, BASE.replace(tag_wait=1.0))["tag_wait_per_req"] > 0.0


def test_a_vcpu_woken_from_idle_adds_its_wake_time_to_each_io():
    # one job, one I/O at a time: the vCPU idles while each I/O is away and the upcall
    # that completes it must first wake it, so the latency grows by about the wake time
    p = BASE.replace(vcpu_wake_ns=0.0)
    a = run("mq", 1, p, iodepth=1, duration=0.02)
    b = run("mq", 1, p.replace(vcpu_wake_ns=20000.0), iodepth=1, duration=0.02)
    assert b["lat_mean_us"] - a["lat_mean_us"] == pytest.approx(20.0, rel=0.1)


def test_per_ring_pools_change_nothing_with_one_ring_and_end_the_backend_contention():
    p = BASE.replace(tag_wait=1.0)
    one = simulate("mq", [8], queues=1, params=p, duration=0.01, quiet=True)
    one_pr = simulate("mq", [8], queues=1, params=p.replace(be_pools_per_ring=1.0),
                      duration=0.01, quiet=True)
    cols = [c for c in one.columns if c not in ("wall_s", "config", "point_key")]
    assert one[cols].equals(one_pr[cols])
    shared = run("mq", 16, p)
    per_ring = run("mq", 16, p.replace(be_pools_per_ring=1.0))
    assert shared["util_dom0_spin"] > 0.1
    assert per_ring["util_dom0_spin"] < 0.01
    assert per_ring["iops"] > shared["iops"]


def test_one_frontend_lock_for_every_ring_is_the_io_lock_of_one_ring():
    p = BASE.replace(tag_wait=1.0)
    cols = ["iops", "util_vcpu_spin", "util_vcpu_hold", "lat_mean_us"]
    one = run("mq", 8, p, queues=1)
    one_dev = run("mq", 8, p.replace(fe_lock_per_ring=0.0), queues=1)
    assert (one[cols] == one_dev[cols]).all()
    per_ring = run("mq", 16, p)
    per_dev = run("mq", 16, p.replace(fe_lock_per_ring=0.0))
    # 16 vCPUs' submissions and every ring's interrupt handler now queue on one lock
    assert per_ring["util_vcpu_spin"] < 0.01
    assert per_dev["util_vcpu_spin"] > 10 * per_ring["util_vcpu_spin"]


def test_a_point_with_random_placements_is_the_weighted_mean_over_its_placements():
    from xbq.engines.des.point import DesPoint
    from xbq.engines.des.simulate import _pair, _run
    from xbq.workload.placement import left_out, placement_plan, stratified_se

    p = BASE.replace(tag_wait=1.0, job_placement=1.0, placements=4.0)
    row = run("mq", 8, p, duration=0.005)
    plan = placement_plan(8, 16, 1, 4)
    pt = DesPoint(mode="mq", jobs=8, duration_s=0.005, seed=1, params=p)
    runs = [_run(pt, _pair(pt), v, 0, None, True) for _, _, v in plan]  # a fresh device each
    strata, weights, _ = zip(*plan, strict=True)
    iops = [r["iops"] for r in runs]
    assert row["iops"] == pytest.approx(float(np.dot(weights, iops)), rel=1e-12)
    assert row["iops_se"] == pytest.approx(stratified_se(strata, weights, iops), rel=1e-12)
    assert row["placement_left_out"] == left_out(8, 16, 4) > 0.0
    assert row["max_ring_occupancy"] == max(
        r["max_ring_occupancy"] for r in runs)
    for col in ("submitted", "completed", "events", "ring_full"):  # counts over every run
        assert row[col] == sum(r[col] for r in runs)
    # pinned jobs have one placement: the setting changes nothing
    pinned = BASE.replace(tag_wait=1.0)
    cols = ["iops", "lat_mean_us", "util_vcpu_busy", "iops_se"]
    a = run("mq", 8, pinned, duration=0.005)
    b = run("mq", 8, pinned.replace(placements=5.0), duration=0.005)
    assert (a[cols] == b[cols]).all() and a["iops_se"] == 0.0
    assert a["placement_left_out"] == b["placement_left_out"] == 0.0


def test_unpinned_jobs_leave_vcpus_empty_so_fewer_contend_for_io_lock():
    # 16 jobs on 16 vCPUs: round-robin puts one on each, so 16 contend for the legacy
    # io_lock; placed at random they sit on 16 (1 - (15/16)^16) = 10.3 vCPUs on average
    p = BASE.replace(tag_wait=1.0)
    rr = run("sq", 16, p, duration=0.01)
    rnd = run("sq", 16, p.replace(job_placement=1.0, placements=8.0), duration=0.01)
    assert rnd["util_vcpu_spin"] < 0.85 * rr["util_vcpu_spin"]


def test_a_vcpu_that_polls_before_it_blocks_is_not_woken_through_xen():
    # one job at iodepth 1: its vCPU idles between submission and completion (the I/O's
    # round trip, several µs). Blocking at once pays vcpu_wake_ns per I/O; polling longer
    # than the round trip pays none, and runs exactly as with no wake-up cost at all,
    # with the poll counted as busy time.
    wake = BASE.replace(vcpu_wake_ns=20_000.0)
    blocks = run("mq", 1, wake, iodepth=1)
    polls = run("mq", 1, wake.replace(halt_poll_ns=200_000.0), iodepth=1)
    free = run("mq", 1, BASE, iodepth=1)
    assert blocks["iops"] < 0.8 * free["iops"]
    assert polls["iops"] == free["iops"] and polls["completed"] == free["completed"]
    assert polls["util_vcpu_busy"] > 1.5 * free["util_vcpu_busy"]
    # a poll much shorter than the idle gaps spares only the rare wake-up that comes at
    # once (an event within 100 ns of going idle), and adds busy time
    short = run("mq", 1, wake.replace(halt_poll_ns=100.0), iodepth=1)
    assert short["iops"] == pytest.approx(blocks["iops"], rel=0.01)
    assert short["util_vcpu_busy"] > blocks["util_vcpu_busy"]


def test_a_backend_thread_that_polls_before_it_sleeps_needs_no_wake_up():
    # one job, one ring: the backend thread sleeps between the guest's batches. Sleeping at
    # once pays be_wake_ns and a context switch on every upcall; polling longer than the
    # gaps pays neither, exactly as a free wake-up with no switch would
    slow = BASE.replace(be_wake_ns=30_000.0)
    sleeps = run("mq", 1, slow, iodepth=4)
    polls = run("mq", 1, slow.replace(be_poll_ns=1e6), iodepth=4)
    assert polls["iops"] > 1.5 * sleeps["iops"]
    assert polls["ctx_per_req"] < sleeps["ctx_per_req"]
    free = run("mq", 1, slow.replace(be_wake_ns=0.0, be_poll_ns=1e6), iodepth=4)
    assert polls["iops"] == free["iops"]
