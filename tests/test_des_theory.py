"""The twin configured as textbook queues matches the formulas; invariants of full-model runs.

Textbook set-up (``xbq.engines.des.params.textbook``): every CPU, lock and event cost is
zero, so the protocol path (real rings, real notifications) takes no time and only the
device (and the arrival or think clocks) does. Tolerances come from the spread of
independent replications (a t interval), never from digits pinned under one seed.
"""

from math import factorial

import numpy as np
import pytest

from xbq.engines.des.params import DesParams, textbook
from xbq.engines.des.simulate import simulate

REPS = 6
T_99 = 4.03  # t quantile, 5 degrees of freedom, two-sided 99 %


def _replicate(column, **kw):
    vals = np.array([simulate(seed=100 + k, **kw)[column].iloc[0] for k in range(REPS)])
    return vals.mean(), vals.std(ddof=1) / np.sqrt(REPS)


def _check(theory, mean, se, what):
    assert abs(mean - theory) <= T_99 * se + 1e-3 * theory, \
        f"{what}: simulated {mean:.4g} +- {se:.2g}, theory {theory:.4g}"


def _open(S, lam, channels=1, exp=1.0):
    return textbook(device_ssd=1.0, ssd_channels=float(channels), ssd_base_ns=S,
                    ssd_exp=exp, arrival_ns=1e9 / lam, ring_page_order=4.0)


def test_mm1_response_time_and_throughput():
    S, lam = 20_000.0, 25_000.0  # rho = 0.5
    p = _open(S, lam)
    kw = dict(mode="mq1", jobs=1, vcpus=1, duration=0.4, params=p)
    w, se = _replicate("lat_mean_us", **kw)
    _check(S / (1 - lam * S * 1e-9) / 1e3, w, se, "M/M/1 mean response (us)")
    x, se = _replicate("iops", **kw)
    _check(lam, x, se, "M/M/1 throughput")


def test_mmc_response_time():
    S, lam, c = 40_000.0, 70_000.0, 4  # a = 2.8, rho = 0.7
    p = _open(S, lam, channels=c)
    a = lam * S * 1e-9
    rho = a / c
    tail = a ** c / factorial(c) / (1 - rho)
    erlang_c = tail / (sum(a ** k / factorial(k) for k in range(c)) + tail)
    theory = (S + erlang_c * S / (c - a)) / 1e3
    w, se = _replicate("lat_mean_us", mode="mq1", jobs=1, vcpus=1, duration=0.3, params=p)
    _check(theory, w, se, "M/M/c mean response (us)")


def test_md1_waiting_time():
    S, lam = 20_000.0, 35_000.0  # rho = 0.7, deterministic service
    rho = lam * S * 1e-9
    theory = (S + rho * S / (2 * (1 - rho))) / 1e3
    w, se = _replicate("lat_mean_us", mode="mq1", jobs=1, vcpus=1, duration=0.3,
                       params=_open(S, lam, exp=0.0))
    _check(theory, w, se, "M/D/1 mean response (us)")


def test_machine_repairman_throughput():
    N, S, Z = 8, 10_000.0, 50_000.0
    terms = [factorial(N) / factorial(N - k) * (S / Z) ** k for k in range(N + 1)]
    p0 = 1 / sum(terms)
    X = (1 - p0) / (S * 1e-9)
    R = (N / X - Z * 1e-9) * 1e6
    p = textbook(device_ssd=1.0, ssd_channels=1.0, ssd_base_ns=S, ssd_exp=1.0, think_ns=Z,
                 think_exp=1.0)
    kw = dict(mode="mq", jobs=N, queues=N, vcpus=N, iodepth=1, duration=0.15, params=p)
    x, se = _replicate("iops", **kw)
    _check(X, x, se, "M/M/1//N throughput")
    r, se = _replicate("lat_mean_us", **kw)
    _check(R, r, se, "M/M/1//N response (us)")


# --- invariants of the full model -------------------------------------------------------------

FULL = [("sq", 1), ("sq", 8), ("sq", 32), ("mq1", 16), ("mq", 1), ("mq", 16), ("mq", 64)]


@pytest.fixture(scope="module")
def full_runs():
    return {(m, j): simulate(m, j, duration=0.02, seed=7) for m, j in FULL}


def test_littles_law_every_full_run(full_runs):
    for key, df in full_runs.items():
        row = df.iloc[0]
        # edge effect: I/Os straddling the window ends, at most in_flight of them
        tol = 0.01 + 2.0 * (row.jobs * row.iodepth) / max(row.completed, 1)
        assert abs(row.little_L / row.little_XW - 1) <= tol, key


def test_ring_never_holds_more_than_its_size(full_runs):
    for key, df in full_runs.items():
        row = df.iloc[0]
        assert 0 < row.max_ring_occupancy <= row.ring_size, key
    # one ring of 32 slots and 32 x 64 I/Os: the ring is the limit and fills
    assert full_runs[("sq", 32)].iloc[0].ring_full > 0
    assert full_runs[("sq", 32)].iloc[0].max_ring_occupancy == 32


def test_more_iodepth_never_lowers_throughput():
    prev = 0.0
    for depth in (1, 2, 8, 32):
        x = simulate("mq", 4, iodepth=depth, duration=0.02, seed=3)["iops"].iloc[0]
        assert x >= prev * 0.97, f"iodepth {depth}: {x:.0f} < {prev:.0f}"
        prev = max(prev, x)


def test_same_seed_same_frame():
    a = simulate("mq", [4, 16], duration=0.01, seed=11).drop(columns="wall_s")
    b = simulate("mq", [4, 16], duration=0.01, seed=11).drop(columns="wall_s")
    assert a.equals(b)
    c = simulate("mq", [4, 16], duration=0.01, seed=12).drop(columns="wall_s")
    assert not a.equals(c)


def test_mcs_does_not_collapse_where_ticket_does():
    ticket = simulate("sq", 16, duration=0.02, seed=5)["iops"].iloc[0]
    mcs = simulate("sq", 16, duration=0.02, seed=5,
                   params=DesParams().replace(lock_mcs=1.0))["iops"].iloc[0]
    assert mcs > ticket


# --- physical CPUs and warm-up ----------------------------------------------------------------


def test_cpu_bound_jobs_share_the_physical_cpus():
    # Every cost but the jobs' own CPU work is zero: J jobs on J vCPUs are CPU-bound, so
    # P < J physical CPUs (a work-conserving scheduler) complete P / S I/Os per second and
    # are never idle.
    S, J = 20_000.0, 6
    for P in (2, 4):
        p = textbook(submit_ns=S, pcpus=float(P))
        row = simulate("mq", J, queues=J, vcpus=J, iodepth=1, duration=0.2, params=p).iloc[0]
        assert abs(row.iops / (P / S * 1e9) - 1) < 0.01, (P, row.iops)
        assert row.util_pcpu == pytest.approx(1.0, abs=0.01)
    row = simulate("mq", J, queues=J, vcpus=J, iodepth=1, duration=0.2,
                   params=textbook(submit_ns=S)).iloc[0]
    assert abs(row.iops / (J / S * 1e9) - 1) < 0.01


def test_a_pool_as_large_as_the_vcpus_changes_nothing():
    p = DesParams()
    a = simulate("mq", 8, queues=8, vcpus=8, duration=0.01, seed=3, params=p).iloc[0]
    b = simulate("mq", 8, queues=8, vcpus=8, duration=0.01, seed=3,
                 params=p.replace(pcpus=8.0 + p.dom0_vcpus)).iloc[0]
    for col in ("iops", "lat_mean_us", "completed", "batch_mean", "notify_fe_per_req"):
        assert a[col] == b[col], col
    assert b.util_vcpu_steal == 0.0 and b.util_dom0_steal == 0.0


def test_too_few_physical_cpus_cost_throughput_and_show_as_steal():
    p = DesParams()
    free = simulate("mq", 16, duration=0.02, seed=4, params=p).iloc[0]
    tight = simulate("mq", 16, duration=0.02, seed=4, params=p.replace(pcpus=8.0)).iloc[0]
    assert tight.iops < free.iops
    assert tight.util_vcpu_steal + tight.util_dom0_steal > 0.05
    assert 0 < tight.max_ring_occupancy <= tight.ring_size
    tol = 0.01 + 2.0 * (tight.jobs * tight.iodepth) / tight.completed
    assert abs(tight.little_L / tight.little_XW - 1) <= tol


def test_warmup_lasts_until_the_start_burst_has_drained():
    # 64 jobs x 64 I/Os start at once on one ring: a short run must already measure the
    # steady state that a long run measures.
    short = simulate("sq", 64, duration=0.02, seed=2).iloc[0]
    long = simulate("sq", 64, duration=0.3, seed=2).iloc[0]
    assert abs(short.iops / long.iops - 1) < 0.05
    assert short.warmup_s * short.iops >= 3 * 64 * 64 * 0.9


def test_random_job_placement_is_seeded_and_uneven():
    from xbq.workload.placement import job_placement

    rr = job_placement(32, 16, 1, False)
    assert (np.bincount(rr, minlength=16) == 2).all()
    a, b = job_placement(32, 16, 1, True), job_placement(32, 16, 1, True)
    assert (a == b).all() and not (a == job_placement(32, 16, 2, True)).all()
    assert a.min() >= 0 and a.max() < 16 and len(set(a)) < 16  # some vCPUs get no job
