"""Theory checks of what the calibration uses: the twin's spin locks, its pool of physical
CPUs, and Little's law on full calibrated runs (issue 21, part 3).

``tests/test_des_theory.py`` checks the twin as textbook queues in front of the device. The
fit also leans on the locks (ticket hand-off, the completion interrupt taking the same lock),
on the vCPUs' pCPU pool and on the accounting of latency and occupancy; each is set up here
where queueing theory gives its exact value, derived from first principles in the docstrings
(none of the set-ups below is product-form: every CPU and lock cost of the twin is
deterministic, only think times and device times are random). Set-up: ``textbook(...)``
(every cost 0) plus the one or two costs under test; one job per vCPU and per ring, iodepth
1, exponential think time ``Z`` between a completion and the next submission. Tolerances
are those of ``test_des_theory.py``: the spread of 6 seeded replications (a t interval at
99 %) plus 0.1 %, never digits pinned under one seed; the few runs without any random draw
(no think time) say so and use a relative tolerance from their window.
"""

from collections import deque
from math import comb, exp
from pathlib import Path

import numpy as np
import pytest

from xbq.engines.des import state
from xbq.engines.des.params import load_params, textbook
from xbq.engines.des.simulate import simulate
from xbq.models import locks as lock_models
from xbq.study.datasets import load_seed

REPS = 6
T_99 = 4.03  # t quantile, 5 degrees of freedom, two-sided 99 %
CALIBRATED = Path(__file__).resolve().parent.parent / "data" / "calibrated" / "des-params.json"


def _replicate(columns, **kw):
    """Mean and standard error over REPS seeds of each column (a column may be a function
    of the row)."""
    rows = [simulate(seed=100 + k, quiet=True, **kw).iloc[0] for k in range(REPS)]
    out = {}
    for col in columns:
        vals = np.array([col(r) if callable(col) else r[col] for r in rows], float)
        out[col] = (vals.mean(), vals.std(ddof=1) / np.sqrt(REPS))
    return out


def _check(theory, mean, se, what):
    assert abs(mean - theory) <= T_99 * se + 1e-3 * theory, \
        f"{what}: simulated {mean:.5g} +- {se:.2g}, theory {theory:.5g}"


# --- theory -----------------------------------------------------------------------------------


def md1_repairman(n: int, s: float, z: float) -> float:
    """Throughput (per ns) of M/D/1//n: n sources with exponential think time of mean ``z``,
    one FIFO server with deterministic service ``s``.

    Takacs (1962; Introduction to the Theory of Queues, ch. 5) for M/G/1//n with service
    Laplace transform psi: the server is idle with probability
    ``p0 = 1 / (1 + n s/z sum_{k=0}^{n-1} C(n-1, k) B_k)``, ``B_0 = 1``,
    ``B_k = prod_{i=1}^k (1 - psi(i/z)) / psi(i/z)``; throughput ``(1 - p0) / s``. Here
    ``psi(x) = exp(-x s)``, so ``B_k = prod_{i=1}^k (exp(i s/z) - 1)``. (With exponential
    service, ``B_k = k! (s/z)^k`` and this is the machine-repairman formula.)
    """
    total, b = 1.0, 1.0
    for k in range(1, n):
        b *= exp(k * s / z) - 1.0
        total += comb(n - 1, k) * b
    return (1.0 - 1.0 / (1.0 + n * s / z * total)) / s


def lock_chain(n: int, s: float, z: float, base: float = 0.0, per_waiter: float = 0.0,
               interrupt: bool = False) -> float:
    """Throughput (per ns) of n jobs sharing one FIFO spin lock of the twin, exactly.

    Each job thinks (exponential, mean ``z``), then asks for the lock and holds it ``s``
    (deterministic); every other cost is 0. ``xbq.engines.des.locks`` hands the lock, at a
    release that finds ``k`` CPUs spinning, to the first of them after
    ``base + per_waiter * k`` (``per_waiter`` is 0 for MCS); a lock nobody waits for is
    taken at once (``lock_acquire_ns`` = 0). With ``interrupt`` the job's completion comes
    through an interrupt that takes the same lock (blkfront's ``io_lock``): it joins the
    lock's FIFO at the instant of the job's release, after the hand-off was decided, and
    holds the lock for 0; the job thinks only once it had it.

    Exact by an embedded Markov chain at the releases: the state is the holder (a job's
    submission ``J`` or an interrupt ``T``) and the word of waiters in FIFO order (idle:
    ``I``). From a release with ``k`` waiters the next holder is the first, after a
    deterministic time ``tau`` (hand-off plus its hold), during which each of the ``m`` jobs
    then thinking asks for the lock with probability ``1 - exp(-tau/z)`` independently
    (memoryless think), so ``a ~ Binomial(m, 1 - exp(-tau/z))`` ``J``s join the tail. An idle
    lock waits ``z/n`` for the first of n thinkers. Throughput = (expected ``J`` releases per
    step) / (expected step length) under the chain's stationary law (renewal reward). With no
    hand-off and no interrupt the chain is M/D/1//n (it agrees with :func:`md1_repairman` to
    rounding, which ``test_the_two_derivations_agree`` checks).
    """
    index: dict = {}
    todo: deque = deque()

    def sid(st):
        if st not in index:
            index[st] = len(index)
            todo.append(st)
        return index[st]

    def joins(m, tau):
        p = 1.0 - exp(-tau / z)
        return [(a, comb(m, a) * p ** a * (1.0 - p) ** (m - a)) for a in range(m + 1)]

    edges = []  # (from, to, probability, step length, J releases)
    sid(("I", ""))
    while todo:
        st = todo.popleft()
        holder, word = st
        i = index[st]
        if holder == "I":  # all n think; the first to ask takes the lock and holds it s
            for a, pr in joins(n - 1, s):
                edges.append((i, sid(("J", "J" * a)), pr, z / n + s, 0))
            continue
        done = 1 if holder == "J" else 0
        token = "T" if (holder == "J" and interrupt) else ""
        if not word:  # nobody waits: the own interrupt takes the free lock, or it idles
            edges.append((i, sid(("T", "") if token else ("I", "")), 1.0, 0.0, done))
            continue
        nxt, rest = word[0], word[1:] + token
        tau = base + per_waiter * len(word) + (s if nxt == "J" else 0.0)
        for a, pr in joins(n - 1 - len(rest), tau):
            edges.append((i, sid((nxt, rest + "J" * a)), pr, tau, done))
    size = len(index)
    P = np.zeros((size, size))
    step = np.zeros(size)
    reward = np.zeros(size)
    for i, j, pr, tau, done in edges:
        P[i, j] += pr
        step[i] += pr * tau
        reward[i] += pr * done
    A = P.T - np.eye(size)
    A[-1, :] = 1.0
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    pi = np.linalg.solve(A, rhs)
    return float(pi @ reward / (pi @ step))


def test_the_two_derivations_agree():
    for n in (1, 2, 5, 12):
        assert lock_chain(n, 4000.0, 24000.0) == pytest.approx(
            md1_repairman(n, 4000.0, 24000.0), rel=1e-9)
    # a lock taken also by the completion interrupt serves fewer: a job waits for its
    # completion behind the waiters present at its release
    s, z = 4000.0, 24000.0
    assert lock_chain(4, s, z, interrupt=True) < 0.96 * md1_repairman(4, s, z)


# --- 1. one lock ------------------------------------------------------------------------------


def _backend_lock(n, s, z, **costs):
    """n jobs, each alone on its vCPU and its ring (the ring's lock is taken only by that
    vCPU: its job and its interrupt, never at once), each ring's blkback thread on a dom0
    vCPU of its own; the one contended resource is blkback's device-wide lock
    (``be_shared_lock_ns`` = s, the 2015 RFC's shared persistent-grant tree), taken once per
    request by the backend threads and by nothing else."""
    p = textbook(be_shared_lock_ns=s, think_ns=z, **costs)
    return dict(mode="mq", jobs=n, queues=n, vcpus=n, iodepth=1, params=p)


@pytest.mark.parametrize("n", [2, 4, 8, 12])
def test_a_lock_held_a_fixed_time_is_the_md1_repairman(n):
    """M/D/1//n: the lock is a FIFO server with deterministic service s (ticket hand-off 0).

    A job's cycle is think, wait, hold (every other cost is 0, the null device answers at
    once), so throughput is Takacs' M/D/1//n (:func:`md1_repairman`), the mean latency (from
    the submission to the completion) ``R = n/X - z`` (Little's law on the cycle), and the
    lock wait ``W = R - s`` is what the dom0 CPUs spin: ``util_dom0_spin * dom0_vcpus = X W``.
    """
    s, z = 4000.0, 24000.0
    kw = _backend_lock(n, s, z)
    dom0 = kw["params"].dom0_vcpus

    def wait_us(row):  # spin time per second over acquisitions per second
        return row.util_dom0_spin * dom0 / row.iops * 1e6

    got = _replicate(("iops", "lat_mean_us", wait_us), duration=0.05, **kw)
    x = md1_repairman(n, s, z) * 1e9
    r_us = (n / x - z * 1e-9) * 1e6
    _check(x, *got["iops"], f"M/D/1//{n} throughput")
    _check(r_us, *got["lat_mean_us"], f"M/D/1//{n} response (us)")
    _check(r_us - s / 1e3, *got[wait_us], f"M/D/1//{n} lock wait (us)")


@pytest.mark.parametrize("n", [2, 7, 12, 16])
def test_ticket_handoff_per_waiter_collapses_as_derived(n):
    """The ticket lock's collapse: hand-off ``base + per_waiter * k`` with k waiters.

    The exact value is :func:`lock_chain` (the hand-off is deterministic and fixed by the
    waiters at the release, so no birth-death model is exact). With s = 2 us, z = 20 us,
    base 0.2 us, 0.6 us per waiter, throughput peaks at n = 7 (263k) and falls to 136k at 12
    and 97k at 16; these n span the rise, the peak and the collapse.
    ``xbq.models.locks.ticket`` (birth-death: exponential service ``serial + handoff*k/2``
    with k holding or waiting) approximates it: with ``serial = s + base - per_waiter`` and
    ``handoff = 2 per_waiter`` it has the same peak (n = 7) but is 1-7 % low up to it and up
    to 11 % high past it, because it draws the service exponentially and prices the hand-off with
    the queue during the service, not at the release; the saturated limit below is where
    the two are the same model.
    """
    s, z, base, per = 2000.0, 20000.0, 200.0, 600.0
    got = _replicate(("iops",), duration=0.05,
                     **_backend_lock(n, s, z, handoff_base_ns=base, handoff_per_waiter_ns=per))
    _check(lock_chain(n, s, z, base, per) * 1e9, *got["iops"], f"ticket lock, {n} jobs")


@pytest.mark.parametrize("n", [12, 16])
def test_mcs_handoff_is_constant(n):
    """MCS (``lock_mcs``): the hand-off is ``base`` whatever the waiters: no collapse, and
    the throughput is :func:`lock_chain` with no per-waiter term."""
    s, z, base, per = 2000.0, 20000.0, 200.0, 600.0
    got = _replicate(("iops",), duration=0.05,
                     **_backend_lock(n, s, z, handoff_base_ns=base, handoff_per_waiter_ns=per,
                                     lock_mcs=1.0))
    _check(lock_chain(n, s, z, base, 0.0) * 1e9, *got["iops"], f"MCS lock, {n} jobs")


def test_saturated_ticket_lock_is_the_models_limit():
    """No think time: every release finds the other n - 1 jobs spinning (the releaser's next
    request arrives at the release's instant, after the hand-off), so each acquisition takes
    ``s + base + per_waiter (n - 1)`` and ``X = 1 / (s + base + per_waiter (n - 1))``
    exactly. ``xbq.models.locks.ticket`` with vanishing think time sits in its state n
    (all holding or waiting) and serves ``serial + handoff n/2``: the same number with
    ``serial = s + base - per_waiter``, ``handoff = 2 per_waiter``. (At n = 1 the twin hands
    off nothing; the model still charges ``serial + handoff/2``.) The run draws nothing
    random that its timing depends on: the window's edge is the only error (< 0.1 %)."""
    s, base, per = 2000.0, 200.0, 600.0
    for n in (2, 4, 8, 16):
        row = simulate(duration=0.02, seed=1, quiet=True,
                       **_backend_lock(n, s, 0.0, handoff_base_ns=base,
                                       handoff_per_waiter_ns=per)).iloc[0]
        theory = 1e9 / (s + base + per * (n - 1))
        assert row.iops == pytest.approx(theory, rel=1e-3), n
        model = float(lock_models.ticket(n, 1e-9, (s + base - per) / 1e3, 2 * per / 1e3))
        assert model == pytest.approx(theory, rel=1e-4), n


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("handoff", [(0.0, 0.0), (200.0, 600.0)], ids=["no-handoff", "ticket"])
def test_io_lock_shared_with_the_completion_interrupt(n, handoff):
    """blkfront's ``io_lock`` as the fit uses it: taken by each submission
    (``blkif_queue_rq``, ``fe_cs_ns`` = s) and by the interrupt that completes it.

    Set-up: ``mq`` with one lock for the device (``fe_lock_per_ring`` = 0), ring r's job and
    interrupt on vCPU r (so they never compete for a CPU), every cost but ``fe_cs_ns`` and
    the hand-off 0. A job's I/O completes only when its interrupt had the lock: the interrupt
    joins the FIFO at the job's release, behind the waiters then present, and holds the lock
    for 0 (but is handed it like any waiter, with the ticket's per-waiter cost).
    :func:`lock_chain` with ``interrupt`` is exact (its state is the word of submissions and
    interrupts waiting). Without hand-off the throughput is 2-7 % below M/D/1//n (the
    completion's wait); with the ticket's hand-off every interrupt is one more waiter and one
    more hand-off: 100k instead of 215k at n = 8. ``sq`` has the same lock, but its
    interrupt runs on vCPU 0, job 0's, and waits there while job 0 spins: no simple chain
    (without hand-off the twin's ``sq`` is within 1 % of this value at n <= 8).
    """
    s, z = 4000.0, 24000.0
    base, per = handoff
    p = textbook(fe_cs_ns=s, think_ns=z, fe_lock_per_ring=0.0, handoff_base_ns=base,
                 handoff_per_waiter_ns=per)
    got = _replicate(("iops", "lat_mean_us"), mode="mq", jobs=n, queues=n, vcpus=n,
                     iodepth=1, duration=0.05, params=p)
    x = lock_chain(n, s, z, base, per, interrupt=True) * 1e9
    _check(x, *got["iops"], f"io_lock with interrupts, {n} jobs")
    _check((n / x - z * 1e-9) * 1e6, *got["lat_mean_us"], f"io_lock response, {n} jobs (us)")


# --- 2. the pool of physical CPUs -------------------------------------------------------------


@pytest.fixture
def twins(monkeypatch):
    """The twins the next simulations build (their per-vCPU busy and steal times)."""
    made = []
    new_twin = state.new_twin

    def keep(*args, **kw):
        tw = new_twin(*args, **kw)
        made.append(tw)
        return tw

    monkeypatch.setattr(state, "new_twin", keep)
    return made


def _cpu_used(tw):
    """Each vCPU's time on a pCPU in the window (ns): busy minus steal."""
    return tw.cpus["busy"] - tw.cpus["steal"]


@pytest.mark.parametrize("boost", [1.0, 0.0], ids=["boost", "fifo"])
@pytest.mark.parametrize("n", [2, 4, 8])
def test_one_pcpu_shared_by_every_vcpu_is_the_md1_repairman(n, boost):
    """One pCPU for every vCPU (the n jobs' and the dom0 ones of their rings' backend
    threads): with the work on the completion path it is M/D/1//n.

    Each job's only CPU work is ``complete_ns`` = s per I/O, on its vCPU after the
    interrupt; its submission, blkback's thread and the device completion on dom0 take no
    time but each needs the pCPU (a vCPU woken from idle waits for it: at the head of the
    pool's queue with BOOST, at the tail without). The pool is work-conserving and those
    visits come before the work: they only decide the order in which the waiting work is
    served, and with identical deterministic work the number of jobs that left their think
    time and have not finished their work evolves as in M/D/1//n whatever that order (the
    pCPU is busy exactly when that number is positive, and each service is s). So the
    throughput is :func:`md1_repairman` with and without BOOST. (With the work on the
    submission instead, the zero-time visits come after it and delay the next think: 8 %
    less at n = 4, which theory does not give in closed form.)
    """
    s, z = 20000.0, 60000.0
    p = textbook(complete_ns=s, think_ns=z, pcpus=1.0, pcpu_boost=boost)
    got = _replicate(("iops", "util_pcpu"), mode="mq", jobs=n, queues=n, vcpus=n, iodepth=1,
                     duration=0.2, params=p)
    x = md1_repairman(n, s, z) * 1e9
    _check(x, *got["iops"], f"{n} jobs on one pCPU")
    _check(x * s * 1e-9, *got["util_pcpu"], f"{n} jobs on one pCPU: utilisation")


def _cpu_bound(twins, pcpus, boost, n=6, sg=15000.0, sd=5000.0):
    """n jobs without think time whose I/O costs sg on their guest vCPU (``submit_ns``) and
    sd on their ring's dom0 vCPU (``be_req_ns``): the row, and each job's I/Os per second
    (its guest and dom0 vCPUs' pCPU time over the I/O's cost)."""
    p = textbook(submit_ns=sg, be_req_ns=sd, pcpus=float(pcpus), pcpu_boost=boost)
    dur = 0.2
    row = simulate("mq", n, queues=n, vcpus=n, iodepth=1, duration=dur, seed=1, params=p,
                   quiet=True).iloc[0]
    used = _cpu_used(twins[-1])
    per_job = (used[:n] + used[n:2 * n]) / (sg + sd) / dur
    return row, per_job


@pytest.mark.parametrize("pcpus", [2, 3])
def test_cpu_bound_jobs_on_guest_and_dom0_share_the_pool(twins, pcpus):
    """Too few pCPUs for CPU-bound jobs whose work is split between the guest and dom0:
    dom0's vCPUs draw from the same pool, so ``X = pcpus / (sg + sd)`` (not ``pcpus/sg``),
    the pool never idles, and with a FIFO pool queue (no BOOST) every job gets ``X/n``.
    Every job always has one runnable vCPU (its I/O is on its guest or on its dom0 vCPU), so
    n = 6 > pcpus keeps the pool busy. Nothing random touches the timing (no think time, the
    null device, sizes cost nothing): the tolerances are the window's edge (a slice of 1 ms
    in 200 ms)."""
    sg, sd = 15000.0, 5000.0
    row, per_job = _cpu_bound(twins, pcpus, 0.0, sg=sg, sd=sd)
    x = pcpus / (sg + sd) * 1e9
    assert row.iops == pytest.approx(x, rel=2e-3)
    assert row.util_pcpu == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(per_job, x / 6, rtol=0.01)


@pytest.mark.xfail(strict=True, reason=(
    "the pool's BOOST is unconditional: a vCPU woken from idle always goes to the head of the "
    "pCPU queue, so the jobs whose I/O chain keeps waking vCPUs take every pCPU and a vCPU "
    "left at the tail never runs (2 of 6 jobs get 0 I/Os on 2 pCPUs; credit1 demotes a "
    "vCPU that used its credit, which ends such starvation). Kernel issue: "
    "xbq/engines/des/cpus.py pcpu_wake/pcpu_wait, reported, not fixed here."))
def test_with_boost_cpu_bound_jobs_still_each_get_their_share(twins):
    row, per_job = _cpu_bound(twins, 2, 1.0)
    assert row.iops == pytest.approx(2 / 20000.0 * 1e9, rel=2e-3)  # holds: work-conserving
    np.testing.assert_allclose(per_job, row.iops / 6, rtol=0.05)  # fails: 2 jobs starve


def test_jobs_with_think_time_share_two_pcpus_fairly_and_boost_moves_no_throughput(twins):
    """8 jobs with think time on 2 pCPUs (M/D/2//8, no closed form): by symmetry each job
    does 1/8 of the I/Os (its vCPU's pCPU time over ``complete_ns``), and since the pool is
    work-conserving and every work item is the same deterministic s, the order BOOST changes
    cannot change the throughput (the argument of the one-pCPU test): X with and without
    BOOST agree within their t interval."""
    n, s, z = 8, 20000.0, 60000.0
    xs = {}
    for boost in (1.0, 0.0):
        p = textbook(complete_ns=s, think_ns=z, pcpus=2.0, pcpu_boost=boost)
        x, share = [], []
        for k in range(REPS):
            row = simulate("mq", n, queues=n, vcpus=n, iodepth=1, duration=0.2, seed=100 + k,
                           params=p, quiet=True).iloc[0]
            x.append(row.iops)
            share.append(_cpu_used(twins[-1])[:n] / s / 0.2 / row.iops)
        share = np.array(share)
        for j in range(n):
            _check(1 / n, share[:, j].mean(), share[:, j].std(ddof=1) / np.sqrt(REPS),
                   f"job {j}'s share, boost={boost}")
        xs[boost] = np.array(x)
    diff = xs[1.0].mean() - xs[0.0].mean()
    se = np.sqrt(xs[1.0].var(ddof=1) / REPS + xs[0.0].var(ddof=1) / REPS)
    assert abs(diff) <= T_99 * se + 1e-3 * xs[0.0].mean(), (diff, se)


# --- 3. Little's law on the calibrated twin ----------------------------------------------------


def test_littles_law_on_every_calibrated_seed_point():
    """L = X W within 2 % on the 12 points of the seed table (both series, jobs 1-64) with
    the calibrated parameters (tag sleeps, unpinned jobs on 16 placements, vCPU wake-ups, the
    shared backend lock).

    The frame defines both sides over the same interval of an I/O, from the moment its job
    took a tag and started it (``io_alloc``) to its completion: ``little_L`` is the time
    average of I/Os in that interval over the window, ``little_XW`` completions per second
    times their mean latency (``lat_mean_us``). With unpinned jobs a point is the weighted
    mean of its placements, and ``little_XW`` the mean of each placement's product: the
    row's ``iops * lat_mean_us`` is a product of means, up to 6 % above ``little_L`` here
    (sq, 4-8 jobs: placements differ in throughput, and mean(1/X) > 1/mean(X)), a
    definitional gap, not a bias. The time a job sleeps for a tag is in neither side, so
    neither is ``jobs * iodepth``: with tags, I/Os in flight stay below the queue's tags (128
    for ``sq``, 32 per ring for ``mq``). The only error left is the window's edge (the I/Os
    straddling its ends), of order ``R/T``: 25 000 completions per placement make the window
    at least 40 mean latencies long (54 at mq 64), and the worst point is within 0.3 %.
    """
    p = load_params(CALIBRATED)
    seed = load_seed()
    for row in seed.itertuples(index=False):
        mode = "sq" if row.series == "single_ring" else "mq"
        r = simulate(mode, int(row.jobs), queues=int(row.queues), vcpus=int(row.vcpus),
                     iodepth=64, duration=25_000 / row.iops, seed=1, params=p,
                     quiet=True).iloc[0]
        key = (mode, int(row.jobs))
        assert r.duration_s >= 40 * r.lat_mean_us * 1e-6, key
        assert abs(r.little_L / r.little_XW - 1) <= 0.02, (key, r.little_L, r.little_XW)
        assert r.little_L <= (128 if mode == "sq" else 32 * int(row.queues)), key
