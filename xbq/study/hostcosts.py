"""The twin's costs on this machine, microbenchmarked from the native engine's own steps.

The discrete-event twin (:mod:`xbq.engines.des`) charges each step of a request a cost
(:class:`~xbq.engines.des.params.DesParams`); the calibration fits them to a table of IOPS.
Here they are *measured* instead, one step at a time, on the machine at hand, with the code
the native engine runs (:mod:`xbq.engines.native.loops`, :mod:`xbq.blkif`,
:mod:`xbq.engines.native.locks`, :mod:`xbq.xen.atomic`; kernels in
:mod:`xbq.study.hostbench`), each with its spread over repetitions (median, quartiles,
min-max), never fitted to an IOPS curve:

benchmark -> twin field(s): what is timed

* ``submit_outside`` -> ``submit_ns`` (slope per I/O): a job's work per I/O outside any
  lock: reap, draw the I/O, take blk-mq's tags (``run_job``);
* ``submit_cs`` -> ``fe_cs_ns`` (slope per request): ``blkif_queue_rq`` +
  ``flush_requests`` per driver request on a real ring (the critical section, the lock not
  included); ``submit_locked``, the same under the ring lock as ``submit_io`` runs it (for
  reference);
* ``lock_uncontended`` -> ``lock_acquire_ns``: ticket ``spin_lock`` + ``spin_unlock`` in
  one thread;
* ``handoff_mcs`` -> ``handoff_base_ns``: two threads on two CPUs take an MCS lock in turn,
  from the release to the one waiter holding it; ``handoff_ticket`` the same with the ticket
  lock -> ``handoff_per_waiter_ns`` = ticket - MCS (one waiter; at least 0);
* ``backend_dispatch`` -> ``be_batch_ns`` (intercept), ``be_req_ns`` (slope): blkback's
  ``do_block_io_op`` pass over n requests with the device deferred (copy, checks,
  persistent grants, dispatch);
* ``backend_done`` -> ``be_done_ns`` (slope): the deferred null device's completion per
  request (``__end_block_io_op``: ``make_response``, push, notify); ``backend_inline``, the
  native engine's own pass with the null device completing inside ``do_block_io_op`` (for
  reference: about ``be_req_ns + be_done_ns``);
* ``irq`` -> ``irq_base_ns`` (intercept), ``irq_per_rsp_ns`` (slope): ``blkif_interrupt``
  + ``kick_pending_request_queues`` over n responses;
* ``complete`` -> ``complete_ns`` (slope): the native completion per request outside the
  lock (``_complete``: tags, slot, latency, blk-mq's tags, wake-ups);
* ``evtchn_entry`` -> ``irq_entry_ns``: ``evtchn_test_and_clear_pending`` (the upcall's
  look at its port); ``evtchn_send`` -> ``evtchn_send_ns``: ``notify_remote_via_evtchn``;
* ``evtchn_latency`` -> ``evtchn_latency_ns`` = half the round trip of an event bounced
  between two spinning threads on two CPUs, minus send and entry (at least 0);
* ``wake`` -> ``vcpu_wake_ns``, ``be_wake_ns``: a thread halted as an idle native vCPU (a
  futex wait), kicked from another CPU (``vcpu_kick``), from the kick to running; ``kick``,
  what the kick costs its sender (``futex_wake``; no twin field);
* ``poll`` -> ``halt_poll_ns``, ``be_poll_ns``: the idle native vCPU's spin before it halts
  (``NativeConfig.spin`` iterations of a look at its state and ``cpu_relax``);
* ``ctx_switch`` -> ``ctx_switch_ns``: two threads on one CPU hand a futex back and forth,
  half a round trip (wake, sleep, schedule, switch).

Slopes and intercepts come from a least-squares line through one sweep of batch sizes
(1, 2, 4, ... 32 requests), fitted per sweep; their spread is over the sweeps. Every
interval has the cost of its own stamps taken off (:func:`~xbq.study.hostbench.clock_gaps`,
the pipeline's empty interval). Fields no benchmark measures keep their documented default,
or take the value the native engine's structure gives them (no legacy block layer under
``io_lock``: ``sq_locked_ns`` 0; no shared backend lock: ``be_shared_lock_ns`` 0; the null
device completes inline, its work inside the backend's: ``null_ns`` 0); the file says which
for each field (``sources``). The machine's switches and counts describe the native engine:
``pcpus`` is this process's CPUs (``os.sched_getaffinity``), ``tag_wait`` 1 (jobs sleep in
``blk_mq_get_tag``), pinned jobs, a ring lock per ring, a ticket lock.

``python -m xbq.study.hostcosts --out FILE`` writes ``{"params", "sources", "microbench",
"provenance"}``, which ``xbq simulate --params FILE`` reads (only ``params``).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

import numpy as np

from xbq.errors import XbqError

#: The benchmarks, in the order they run.
BENCHES = ("pipeline", "lock", "evtchn", "handoff", "evtchn_latency", "wake", "ctx_switch",
           "poll")

#: Sizes of the full measurement (``scale=1``); :func:`microbench` scales the counts.
SIZES = {
    "pipeline_sweeps": 10_000,  # sweeps over every batch size, both variants
    "pipeline_warm": 50,  # untimed sweeps first (persistent grants mapped)
    "lock_reps": 10_000, "lock_ops": 1000,
    "evtchn_reps": 10_000, "evtchn_ops": 1000,
    "handoff_samples": 500_000,
    "evtchn_latency_samples": 500_000,
    "wake_samples": 10_000, "wake_delay_us": 50,
    "ctx_switch_chunks": 10_000, "ctx_switch_chunk": 50,
    "poll_reps": 20_000,
}
#: Batch sizes of the pipeline's sweeps (driver requests; at most a ring, 32).
BATCHES = (1, 2, 4, 8, 16, 32)
#: Longest a two-thread benchmark may wait for its peer before it gives up (s).
DEADLINE_S = 120.0
#: Cold compile of the benchmarks' kernels on 2 cores (s), for the first-run notice.
COMPILE_S = 40

# --- statistics -------------------------------------------------------------------------------


def spread(values) -> dict:
    """Median, quartiles, min, max and mean of ``values`` (ns), ignoring non-finite ones.

    Parameters
    ----------
    values : array_like of float
        Repetitions of one measurement (ns).

    Returns
    -------
    dict
        ``median``, ``q1``, ``q3``, ``min``, ``max``, ``mean`` (ns) and ``n`` (the finite
        values used).

    Raises
    ------
    XbqError
        No finite value.
    """
    x = np.asarray(values, float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise XbqError("no finite repetition to summarise")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(x.min()),
            "max": float(x.max()), "mean": float(x.mean()), "n": int(x.size), "unit": "ns"}


def _line_fits(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``y = a + b x`` of every row (one sweep each): ``(a, b)`` per row."""
    xm = x.mean(axis=1, keepdims=True)
    ym = y.mean(axis=1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = ((x - xm) * (y - ym)).sum(axis=1) / sxx
    a = ym[:, 0] - b * xm[:, 0]
    return a, b


def _check_count(name: str, value, lo: int = 1, hi: int = 1 << 31) -> int:
    from xbq.checks import check_int

    return check_int(name, value, lo, hi)


def _cpus(need: int) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < need:
        raise XbqError(f"this benchmark needs {need} CPUs; the process may run on "
                       f"{len(cpus)} ({cpus})")
    return cpus


def _native_point(lock: str = "ticket"):
    """A connected native engine point that no thread runs: one job on vCPU 0, one ring
    (``sq``), iodepth 32, the null device; its records are the benchmarks' state."""
    from xbq.engines.native.runner import NativeConfig, _Point

    return _Point(NativeConfig(mode="sq", jobs=1, queues=1, vcpus=2, dom0_vcpus=1,
                               iodepth=32, lock=lock, pin=False))


def _compiling():
    from xbq._jit import first_compile
    from xbq.study import hostbench

    return first_compile("the host microbenchmarks", hostbench, COMPILE_S)


def _clock_cost(n: int = 20000) -> float:
    """ns one ``monotonic_ns`` read adds to an interval it stamps (median of back-to-back
    reads)."""
    from xbq.study.hostbench import clock_gaps

    out = np.zeros(n, np.int64)
    clock_gaps(out)
    return float(np.median(out))


# --- single-thread benchmarks ---------------------------------------------------------------


def bench_pipeline(sweeps: int = 2000, *, batches=BATCHES, warm: int = 50) -> dict:
    """Time the native engine's steps of a request in one thread, batch by batch.

    Each sweep runs one batch of each size in ``batches`` through every step, twice: once
    as the twin splits them (submission without the lock, blkback with a deferred device
    that completes in a step of its own) and once as the native engine runs them (under the
    ring lock, the null device completing inside ``do_block_io_op``).

    Parameters
    ----------
    sweeps : int
        Timed sweeps (repetitions of every batch size).
    batches : sequence of int
        Driver requests per batch, 1 to 32 (a one-page ring), at least two sizes.
    warm : int
        Untimed sweeps first.

    Returns
    -------
    dict
        Per benchmark (``submit_outside``, ``submit_cs``, ``submit_locked``,
        ``backend_dispatch``, ``backend_done``, ``backend_inline``, ``irq``, ``complete``):
        ``slope`` (ns per request, or per I/O for ``submit_outside``) and ``intercept``
        (ns per batch), each a :func:`spread` over the sweeps' own line fits, ``per_op``
        (ns per request at the largest batch) and ``by_batch`` (the median ns per batch).

    Raises
    ------
    XbqError
        A bad argument, or a step that failed (the protocol code's error code).
    """
    from xbq.blkif.blk_mq import BlkMq
    from xbq.study import hostbench as H

    sweeps = _check_count("sweeps", sweeps)
    warm = _check_count("warm", warm, 0)
    b = [_check_count("batch size", v, 1, 32) for v in batches]
    if len(set(b)) < 2:
        raise XbqError("the pipeline needs at least two different batch sizes (a line)")
    pt = _native_point()
    bat = np.array(b, np.int64)
    variants = np.array([[0, 1], [1, 0]], np.int64)  # (locked, defer)
    out = np.zeros((sweeps, bat.size, 2, H.REC_WORDS), np.int64)
    with _compiling():
        c0 = H.clock_pair()
        rc = H.pipeline(pt.fe.arrays(), pt.be.arrays(), BlkMq(pt.hctx, pt.dispatch), pt.run,
                        pt.wl[0], bat, variants, warm, out)
        c1 = H.clock_pair()
    if rc != 0:
        raise XbqError(f"the pipeline benchmark stopped (code {rc})")
    ns_per_cycle = (c1[0] - c0[0]) / max(c1[1] - c0[1], 1)
    empty = float(np.median(out[..., H.S_EMPTY]))

    def step(v, s, count):
        y = (out[:, :, v, s] - empty) * ns_per_cycle
        x = out[:, :, v, count].astype(float)
        a, slope = _line_fits(x, y)
        last = int(np.argmax(bat))
        return {"slope": spread(slope), "intercept": spread(a),
                "per_op": spread(y[:, last] / np.maximum(x[:, last], 1)),
                "by_batch": {int(n): float(np.median(y[:, i])) for i, n in enumerate(bat)},
                "per": "I/O" if count == H.N_IOS else "request"}

    res = {
        "submit_outside": step(0, H.S_OUTSIDE, H.N_IOS),
        "submit_cs": step(0, H.S_SUBMIT, H.N_PIECES),
        "submit_locked": step(1, H.S_SUBMIT, H.N_PIECES),
        "backend_dispatch": step(0, H.S_BACKEND, H.N_CONSUMED),
        "backend_done": step(0, H.S_BE_DONE, H.N_DEFERRED),
        "backend_inline": step(1, H.S_BACKEND, H.N_CONSUMED),
        "irq": step(1, H.S_IRQ, H.N_RESPONSES),
        "complete": step(1, H.S_COMPLETE, H.N_RESPONSES),
    }
    for r in res.values():
        r.update(sweeps=sweeps, batches=list(map(int, bat)))
    res["_pipeline"] = {"ns_per_cycle": ns_per_cycle, "stamp_cycles": empty}
    return res


def bench_lock(reps: int = 2000, ops: int = 1000) -> dict:
    """Uncontended acquire and release of the native engine's locks, one thread.

    Parameters
    ----------
    reps : int
        Repetitions (each one timed loop).
    ops : int
        Acquire/release pairs per repetition.

    Returns
    -------
    dict
        ``lock_uncontended`` (ticket) and, for reference, ``lock_uncontended_mcs`` and
        ``lock_uncontended_pv``: a :func:`spread` of ns per pair over the repetitions.
    """
    from xbq.engines.native.locks import LOCK_KINDS, new_locks, new_mcs_nodes
    from xbq.study import hostbench as H

    reps, ops = _check_count("reps", reps), _check_count("ops", ops)
    res = {}
    for name, kind in (("lock_uncontended", "ticket"), ("lock_uncontended_mcs", "mcs"),
                       ("lock_uncontended_pv", "pv")):
        lk, nodes = new_locks(1), new_mcs_nodes(1)
        out = np.zeros(reps, np.int64)
        with _compiling():
            c0 = H.clock_pair()
            rc = H.lock_loop(lk, nodes, LOCK_KINDS[kind], ops, out)
            c1 = H.clock_pair()
        if rc != 0:
            raise XbqError(f"the {kind} lock failed uncontended")
        npc = (c1[0] - c0[0]) / max(c1[1] - c0[1], 1)
        res[name] = {**spread(out * npc / ops), "reps": reps, "ops": ops, "lock": kind}
    return res


def bench_evtchn(reps: int = 2000, ops: int = 1000) -> dict:
    """An event channel's two ends, one thread: the upcall's test-and-clear of its pending
    bit, and the send (``notify_remote_via_evtchn``) that sets it.

    Parameters
    ----------
    reps, ops : int
        Repetitions, and operations in each.

    Returns
    -------
    dict
        ``evtchn_entry`` (ns per test-and-clear) and ``evtchn_send`` (ns per send, the
        test-and-clear after it taken off, per repetition): :func:`spread` each.
    """
    from xbq.study import hostbench as H

    reps, ops = _check_count("reps", reps), _check_count("ops", ops)
    pt = _native_point()
    port, peer = int(pt.fe.rinfo[0]["evtchn"]), int(pt.be.rings[0]["evtchn"])
    out = np.zeros((reps, 2), np.int64)
    with _compiling():
        c0 = H.clock_pair()
        H.evtchn_loop(pt.conn.evtchn, port, peer, ops, out)
        c1 = H.clock_pair()
    npc = (c1[0] - c0[0]) / max(c1[1] - c0[1], 1)
    entry = out[:, 0] * npc / ops
    return {"evtchn_entry": {**spread(entry), "reps": reps, "ops": ops},
            "evtchn_send": {**spread(out[:, 1] * npc / ops - entry), "reps": reps, "ops": ops}}


# --- two-thread benchmarks --------------------------------------------------------------------


def _two_threads(fn, args, cpus, what: str) -> list:
    """Run ``fn(me, *args[me])`` on two threads, thread ``me`` on CPU ``cpus[me]``; return
    both results. A negative result or a thread that does not finish is an XbqError."""
    results: list = [None, None]
    errors: list = []

    def main(me):
        try:
            os.sched_setaffinity(0, {cpus[me]})  # this thread only (Linux)
            results[me] = fn(me, *args[me])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(me,), daemon=True,
                                name=f"xbq-bench-{me}") for me in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(DEADLINE_S + 10)
    if any(th.is_alive() for th in threads):
        raise XbqError(f"{what}: a benchmark thread did not finish")
    if errors:
        raise XbqError(f"{what}: {type(errors[0]).__name__}: {errors[0]}")
    if any(r is None or r < 0 for r in results):
        raise XbqError(f"{what}: a thread waited {DEADLINE_S:g} s for the other and gave up "
                       "(a CPU this busy cannot run the benchmark)")
    return results


def _ctl():
    from xbq.engines.native.locks import _aligned_zeros
    from xbq.study.hostbench import CTL_WORDS

    return _aligned_zeros(CTL_WORDS)


def _warm(fn, make_args):
    """Compile a two-thread kernel alone: its start barrier already counts one arrival, so
    one call with ``n = 0`` passes it and returns at once."""
    from xbq.study.hostbench import C_START

    ctl = _ctl()
    ctl[C_START] = 1
    with _compiling():
        fn(0, *make_args(ctl))


def _deadline() -> int:
    return time.monotonic_ns() + int(DEADLINE_S * 1e9)


def bench_handoff(samples: int = 200_000) -> dict:
    """Hand-off of a contended lock to its one waiter: two threads, each on a CPU of its
    own, take the lock in turn; the holder waits until the other is queued, stamps and
    releases, the new holder reads the clock (the clock's own cost taken off).

    Parameters
    ----------
    samples : int
        Acquisitions per thread (each thread records about as many hand-offs).

    Returns
    -------
    dict
        ``handoff_ticket`` and ``handoff_mcs``: :func:`spread` of ns from the release to the
        waiter holding the lock.

    Raises
    ------
    XbqError
        Fewer than 2 CPUs, a bad argument, or a thread that waited past its deadline.
    """
    from xbq.engines.native.locks import LOCK_KINDS, new_locks, new_mcs_nodes
    from xbq.study import hostbench as H

    n = _check_count("samples", samples)
    cpus = _cpus(2)
    clock = _clock_cost()
    res = {}
    for kind in ("ticket", "mcs"):
        k = LOCK_KINDS[kind]
        lk, nodes = new_locks(1), new_mcs_nodes(2)
        out = np.full((2, n), -1, np.int64)
        _warm(H.lock_pingpong, lambda c, lk=lk, nodes=nodes, k=k, out=out:
              (lk, nodes, k, c, 0, _deadline(), out[0]))
        lk, nodes = new_locks(1), new_mcs_nodes(2)
        ctl, dl = _ctl(), _deadline()
        got = _two_threads(H.lock_pingpong, [(lk, nodes, k, ctl, n, dl, out[me])
                                             for me in (0, 1)], cpus[:2],
                           f"the {kind} lock hand-off")
        x = np.concatenate([out[me, :got[me]] for me in (0, 1)]).astype(float) - clock
        res[f"handoff_{kind}"] = {**spread(x), "lock": kind, "waiters": 1,
                                  "clock_ns": clock, "cpus": cpus[:2]}
    return res


def bench_evtchn_latency(samples: int = 200_000) -> dict:
    """An event bounced between two threads on two CPUs, each spinning on its port's
    pending bit: half the round trip (the clock's own cost taken off).

    Parameters
    ----------
    samples : int
        Round trips.

    Returns
    -------
    dict
        ``evtchn_latency``: :func:`spread` of half round trips (ns).
    """
    from xbq.study import hostbench as H

    n = _check_count("samples", samples)
    cpus = _cpus(2)
    clock = _clock_cost()
    pt = _native_point()
    ev = pt.conn.evtchn
    p0, p1 = int(pt.fe.rinfo[0]["evtchn"]), int(pt.be.rings[0]["evtchn"])
    out = np.full(n, -1, np.int64)
    _warm(H.evtchn_pingpong, lambda c: (ev, p0, p1, c, 0, _deadline(), out))
    from xbq.xen.evtchn import evtchn_test_and_clear_pending

    evtchn_test_and_clear_pending(ev, p0)
    evtchn_test_and_clear_pending(ev, p1)
    ctl, dl = _ctl(), _deadline()
    _two_threads(H.evtchn_pingpong, [(ev, p0, p1, ctl, n, dl, out)] * 2, cpus[:2],
                 "the event-channel round trip")
    return {"evtchn_latency": {**spread((out - clock) / 2.0), "samples": n,
                               "clock_ns": clock, "cpus": cpus[:2]}}


def bench_wake(samples: int = 5000, delay_us: float = 50.0) -> dict:
    """Wake-up of a halted vCPU thread: thread 1 halts as an idle native vCPU does (a futex
    wait on its wake word), thread 0, on another CPU, waits ``delay_us`` and kicks it
    (``vcpu_kick``: ``futex_wake``); the time from the kick to thread 1 running again.

    Parameters
    ----------
    samples : int
        Halts and kicks.
    delay_us : float
        How long after the halt the kick comes (µs), so that the thread is asleep.

    Returns
    -------
    dict
        ``wake`` (kick to running, ns) and ``kick`` (the kicker's ``futex_wake``, ns):
        :func:`spread` each; halts that ended on their 2 ms bound instead of the kick are
        left out and counted (``timeouts``).
    """
    from xbq.study import hostbench as H

    n = _check_count("samples", samples)
    if not (isinstance(delay_us, int | float) and not isinstance(delay_us, bool)
            and math.isfinite(delay_us) and 0 <= delay_us <= 1000):
        raise XbqError(f"delay_us must be a number of µs in [0, 1000], not {delay_us!r}")
    cpus = _cpus(2)
    clock = _clock_cost()
    pt = _native_point()
    out, kick = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    _warm(H.wake_pingpong, lambda c: (pt.run, c, 0, 0, _deadline(), out, kick))
    ctl, dl = _ctl(), _deadline()
    _two_threads(H.wake_pingpong, [(pt.run, ctl, n, int(delay_us * 1e3), dl, out, kick)] * 2,
                 cpus[:2], "the vCPU wake-up")
    ok = (out >= 0) & (kick >= 0)
    halt_ns = int(pt.run.par[0]["halt_ns"])
    ok &= out < 0.9 * halt_ns
    if not ok.any():
        raise XbqError("the vCPU wake-up: no halt was ended by its kick")
    return {"wake": {**spread(out[ok] - clock), "samples": n, "timeouts": int((~ok).sum()),
                     "delay_us": float(delay_us), "clock_ns": clock, "cpus": cpus[:2]},
            "kick": {**spread(kick[ok] - clock), "samples": n}}


def bench_ctx_switch(chunks: int = 2000, chunk: int = 50) -> dict:
    """Context switch: two threads on one CPU hand a futex turn back and forth (each
    ``futex_wake`` the other, then ``futex_wait``); half a round trip.

    Parameters
    ----------
    chunks : int
        Repetitions (each timed over ``chunk`` round trips).
    chunk : int
        Round trips per repetition.

    Returns
    -------
    dict
        ``ctx_switch``: :func:`spread` of ns per switch (half a round trip).
    """
    from xbq.study import hostbench as H

    chunks, chunk = _check_count("chunks", chunks), _check_count("chunk", chunk)
    cpus = _cpus(1)
    out = np.full(chunks, -1, np.int64)
    _warm(H.futex_pingpong, lambda c: (c, 0, chunk, _deadline(), out))
    ctl, dl = _ctl(), _deadline()
    _two_threads(H.futex_pingpong, [(ctl, chunks * chunk, chunk, dl, out)] * 2,
                 [cpus[0], cpus[0]], "the futex ping-pong")
    return {"ctx_switch": {**spread(out / (2.0 * chunk)), "chunks": chunks, "chunk": chunk,
                           "cpu": cpus[0]}}


# --- all of them, and the twin's parameters -------------------------------------------------------


def bench_poll(reps: int = 20_000, *, words: int = 3) -> dict:
    """The poll of an idle native vCPU before it halts: ``NativeConfig.spin`` idle iterations
    of its loop, each a look at ``words`` words of state (a job, its ring, the interrupt
    flag) and a ``cpu_relax``.

    Returns
    -------
    dict
        ``poll``: a :func:`spread` of the window (ns) over ``reps`` repetitions, and
        ``spin`` (iterations).
    """
    from xbq.engines.native.runner import NativeConfig
    from xbq.study import hostbench as H

    reps, words = _check_count("reps", reps), _check_count("words", words, 1, 64)
    spin = NativeConfig.spin
    out = np.zeros(reps, np.int64)
    state = np.zeros(words, np.int64)
    with _compiling():
        c0 = H.clock_pair()
        H.poll_loop(state, spin, out)
        c1 = H.clock_pair()
    npc = (c1[0] - c0[0]) / max(c1[1] - c0[1], 1)
    return {"poll": {**spread(out * npc), "reps": reps, "spin": int(spin), "words": words}}


def microbench(scale: float = 1.0, *, benches=BENCHES, progress=None) -> dict:
    """Run the benchmarks of ``benches`` at ``scale`` times the sizes of :data:`SIZES`.

    Parameters
    ----------
    scale : float
        Multiplies every count (at least 1 each); 1 is the full measurement (about 20-30 s
        on 2 quiet CPUs, plus a compile of about 10-40 s the first time), 0.001 a smoke
        test.
    benches : sequence of str
        Names from :data:`BENCHES`.
    progress : callable, optional
        Called with each benchmark's name before it runs.

    Returns
    -------
    dict
        Every measurement by name (see the module docstring), each with its spread, and
        ``wall_s`` (seconds each benchmark took, compiles included).
    """
    if isinstance(scale, bool) or not isinstance(scale, int | float) or \
            not math.isfinite(scale) or not 0 < scale <= 100:
        raise XbqError(f"scale must be a number in (0, 100], not {scale!r}")
    unknown = [b for b in benches if b not in BENCHES]
    if unknown or not benches:
        raise XbqError(f"unknown benchmark(s) {unknown or benches!r}; choose from "
                       f"{', '.join(BENCHES)}")

    def size(key):
        return max(1, int(round(SIZES[key] * scale)))

    runs = {
        "pipeline": lambda: bench_pipeline(size("pipeline_sweeps"),
                                           warm=size("pipeline_warm")),
        "lock": lambda: bench_lock(size("lock_reps"), size("lock_ops")),
        "evtchn": lambda: bench_evtchn(size("evtchn_reps"), size("evtchn_ops")),
        "handoff": lambda: bench_handoff(size("handoff_samples")),
        "evtchn_latency": lambda: bench_evtchn_latency(size("evtchn_latency_samples")),
        "wake": lambda: bench_wake(size("wake_samples"), SIZES["wake_delay_us"]),
        "ctx_switch": lambda: bench_ctx_switch(size("ctx_switch_chunks"),
                                               SIZES["ctx_switch_chunk"]),
        "poll": lambda: bench_poll(size("poll_reps")),
    }
    out, wall = {}, {}
    for name in BENCHES:
        if name in benches:
            if progress is not None:
                progress(name)
            t0 = time.perf_counter()
            res = runs[name]()
            for v in res.values():
                v.setdefault("bench", name)
            wall[name] = time.perf_counter() - t0
            out.update(res)
    out["wall_s"] = wall
    return out


#: field -> (benchmark, statistic, how the value is read). Statistics: ``slope`` /
#: ``intercept`` of the pipeline's per-sweep lines, ``median`` of the others.
MEASURED = {
    "submit_ns": ("submit_outside", "slope", "a job's work per I/O outside the lock (reap, "
                  "draw, blk-mq tags): slope per I/O"),
    "fe_cs_ns": ("submit_cs", "slope", "blkif_queue_rq + flush_requests per driver request "
                 "on a real ring, without the lock: slope per request"),
    "lock_acquire_ns": ("lock_uncontended", "median", "ticket spin_lock + spin_unlock, "
                        "uncontended"),
    "handoff_base_ns": ("handoff_mcs", "median", "MCS hand-off to one waiter on another "
                        "CPU"),
    "handoff_per_waiter_ns": ("handoff_ticket", "median", "ticket hand-off to one waiter "
                              "minus the MCS hand-off (at least 0); more waiters than one "
                              "need more CPUs than two"),
    "be_batch_ns": ("backend_dispatch", "intercept", "do_block_io_op per pass (deferred "
                    "device): intercept of the line over requests (at least 0)"),
    "be_req_ns": ("backend_dispatch", "slope", "do_block_io_op per request consumed "
                  "(copy, checks, persistent-grant lookups of the IOmeter mix, dispatch): "
                  "slope; the lookups are in it, so pgnt_hit_ns is 0"),
    "be_done_ns": ("backend_done", "slope", "the deferred null device's completion per "
                   "request (__end_block_io_op, make_response): slope"),
    "irq_base_ns": ("irq", "intercept", "blkif_interrupt + kick_pending_request_queues per "
                    "call: intercept (at least 0)"),
    "irq_per_rsp_ns": ("irq", "slope", "blkif_interrupt per response: slope"),
    "complete_ns": ("complete", "slope", "the native completion per request after the lock "
                    "(_complete): slope"),
    "irq_entry_ns": ("evtchn_entry", "median", "evtchn_test_and_clear_pending of the "
                     "interrupt's port"),
    "evtchn_send_ns": ("evtchn_send", "median", "notify_remote_via_evtchn (the sender's "
                       "cost; a kick of a halted receiver, futex_wake, is not in it: see "
                       "microbench.kick)"),
    "evtchn_latency_ns": ("evtchn_latency", "median", "half the event round trip between "
                          "two spinning CPUs, minus evtchn_send and irq_entry (at least 0)"),
    "vcpu_wake_ns": ("wake", "median", "a thread halted on a futex as an idle native vCPU, "
                     "from the kick (vcpu_kick) on another CPU to running"),
    "be_wake_ns": ("wake", "median", "as vcpu_wake_ns: a native dom0 vCPU halts and is "
                   "kicked the same way"),
    "halt_poll_ns": ("poll", "median", "an idle native vCPU's spin before it halts "
                     "(NativeConfig.spin iterations of its loop: a look at its state and "
                     "cpu_relax); work that comes meanwhile needs no kick"),
    "be_poll_ns": ("poll", "median", "as halt_poll_ns: a native dom0 vCPU spins as long "
                   "before it halts, and an upcall meanwhile needs no kick"),
    "ctx_switch_ns": ("ctx_switch", "median", "futex ping-pong of two threads on one CPU, "
                      "half a round trip (the native engine switches jobs inside its vCPU "
                      "loop without a thread switch; this is the host's thread switch)"),
}
#: Fields the native engine's structure fixes: (value, why).
NATIVE = {
    "sq_locked_ns": (0.0, "the native sq path runs the same blkif_queue_rq under io_lock "
                     "as mq under ring_lock; there is no legacy request_fn"),
    "pgnt_hit_ns": (0.0, "folded into be_req_ns (the backend benchmark's requests carry "
                    "their persistent-grant lookups)"),
    "be_shared_lock_ns": (0.0, "blkback here takes no device-wide lock per request"),
    "null_ns": (0.0, "the native null device completes inline in do_block_io_op; its work "
                "is in be_req_ns and be_done_ns"),
    "think_ns": (0.0, "fio's closed loop: no think time"),
    "arrival_ns": (0.0, "closed loop with iodepth"),
    "tag_wait": (True, "native jobs sleep in blk_mq_get_tag when their queue's 32 tags are "
                 "used"),
    "job_placement": (False, "native jobs are pinned, job j on vCPU j % vcpus (the sweeps' "
                      "--placement pinned)"),
    "placements": (1, "pinned jobs: one placement"),
    "lock_mcs": (False, "the sweeps' ticket lock (the pv lock has no twin)"),
    "fe_lock_per_ring": (True, "native mq takes ring r's own ring_lock"),
    "irq_spread": (True, "native mq binds ring r's event to the first vCPU mapped to queue r "
                   "(vCPU r when vcpus = queues)"),
    "device_ssd": (False, "the null device"),
    "persistent": (True, "native connects with persistent grants"),
    "max_indirect": (32, "blkfront's max_indirect_segments (BLKFRONT_MAX_INDIRECT_SEGMENTS)"),
    "ring_page_order": (0, "the sweeps' one-page rings"),
    "pcpu_boost": (False, "the host is Linux (CFS), not Xen's credit1: a waking thread is "
                   "placed by its vruntime, not at the head of the run queue (credit1's "
                   "BOOST, which also starves CPU-bound vCPUs in the twin: "
                   "tests/test_des_theory_locks.py)"),
    "dom0_vcpus": (16, "the native default (the sweeps' dom0_vcpus; twin_native sets each "
                   "point's)"),
}


def host_params(micro: dict, *, pcpus: int | None = None):
    """The twin's parameters from :func:`microbench`'s measurements, and their sources.

    Parameters
    ----------
    micro : dict
        :func:`microbench`'s result (every benchmark of :data:`MEASURED` in it).
    pcpus : int, optional
        Physical CPUs of the twin's pool (default: this process's, ``os.sched_getaffinity``).

    Returns
    -------
    params : DesParams
    sources : dict
        Per field, ``"measured: <benchmark> <statistic> (...)"``, ``"native: <why>"`` or
        ``"default: <its documentation>"``; a measured value outside the field's bounds is
        clipped and says so.

    Raises
    ------
    XbqError
        A benchmark missing from ``micro``, or a bad ``pcpus``.
    """
    from xbq.checks import check_int
    from xbq.engines.des.params import FIELDS, PHYSICAL, DesParams

    missing = sorted({b for b, _, _ in MEASURED.values()} - set(micro))
    if missing:
        raise XbqError(f"microbench lacks {', '.join(missing)} (run every benchmark)")
    pcpus = len(os.sched_getaffinity(0)) if pcpus is None else check_int("pcpus", pcpus, 1, 256)

    def stat(bench, which):
        m = micro[bench]
        return float(m[which]["median"] if which in ("slope", "intercept") else m["median"])

    val = {f: stat(b, s) for f, (b, s, _) in MEASURED.items()}
    val["handoff_per_waiter_ns"] -= stat("handoff_mcs", "median")
    val["evtchn_latency_ns"] -= val["evtchn_send_ns"] + val["irq_entry_ns"]
    values, sources = {}, {}
    fields = DesParams.model_fields
    for f, v in val.items():
        hi = PHYSICAL[f][1]
        clipped = min(max(v, 0.0), hi)
        values[f] = clipped
        note = "" if clipped == v else f"; {v:.1f} clipped to [0, {hi:g}]"
        b, s, how = MEASURED[f]
        sources[f] = f"measured: {b} {s} ({how}){note}"
    for f, (v, why) in NATIVE.items():
        values[f] = v
        sources[f] = f"native: {why}"
    values["pcpus"] = pcpus
    sources["pcpus"] = f"native: this machine's CPUs (os.sched_getaffinity: {pcpus})"
    for f in FIELDS:
        if f not in values:
            sources[f] = f"default: {fields[f].default!r} ({fields[f].description})"
    return DesParams(**values), {f: sources[f] for f in FIELDS}


def host_cost_file(micro: dict, *, pcpus: int | None = None, command: str = "") -> dict:
    """The document ``python -m xbq.study.hostcosts`` writes: ``params`` (every field),
    ``sources``, ``microbench`` (the measurements with their spreads) and ``provenance``
    (command, date, commit, machine)."""
    from xbq.study.paths import provenance
    from xbq.study.results import machine_info

    params, sources = host_params(micro, pcpus=pcpus)
    prov = provenance(command or "python -m xbq.study.hostcosts")
    prov["machine"] = machine_info()
    prov["what"] = ("the twin's costs microbenchmarked from the native engine's own steps on "
                    "this machine, nothing fitted to IOPS")
    return {"params": params.to_dict(), "sources": sources, "microbench": _plain(micro),
            "provenance": prov}


def _plain(obj):
    """``obj`` with numpy scalars as Python numbers (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def write_cost_file(doc: dict, path) -> None:
    """Write ``doc`` (:func:`host_cost_file`) as JSON to ``path``, atomically."""
    import json
    from pathlib import Path

    from xbq.files import atomic_write

    p = Path(path)
    if p.parent and not p.parent.is_dir():
        raise XbqError(f"{p.parent}: no such folder")
    atomic_write(p, (json.dumps(_plain(doc), indent=1, allow_nan=False) + "\n").encode())


def report(doc: dict) -> str:
    """The parameters as a person reads them: value, and where it came from."""
    lines = [f"{'parameter':<24} {'value':>12}  source"]
    for f, v in doc["params"].items():
        src = doc["sources"][f]
        if src.startswith("default:"):
            src = "default"
        shown = f"{v:.1f}" if isinstance(v, float) else str(v)
        lines.append(f"{f:<24} {shown:>12}  {src[:110]}")
    lines.append("")
    lines.append(f"{'benchmark':<22} {'median':>10} {'q1':>9} {'q3':>9} {'min':>9} {'max':>10}"
                 "  (ns)")
    for name, m in doc["microbench"].items():
        if not isinstance(m, dict):
            continue
        rows = [(name, m)] if "median" in m else \
            [(f"{name}.{k}", m[k]) for k in ("slope", "intercept") if k in m]
        for label, s in rows:
            lines.append(f"{label:<22} {s['median']:>10.1f} {s['q1']:>9.1f} {s['q3']:>9.1f} "
                         f"{s['min']:>9.1f} {s['max']:>10.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m xbq.study.hostcosts",
        description="Microbenchmark the native engine's steps on this machine and write a "
        "twin parameter file (xbq simulate --params FILE reads it).")
    ap.add_argument("--out", required=True, metavar="FILE", help="the JSON file to write")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every benchmark's repetitions (default 1: the full "
                    "measurement, about 20-30 s on 2 quiet CPUs)")
    ap.add_argument("--pcpus", type=int, default=None,
                    help="pcpus of the file (default: this process's CPUs)")
    args = ap.parse_args(argv)
    try:
        micro = microbench(args.scale, progress=lambda name: print(
            f"hostcosts: {name} ...", file=sys.stderr, flush=True))
        cmd = "python -m xbq.study.hostcosts " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
        doc = host_cost_file(micro, pcpus=args.pcpus, command=cmd)
        doc["provenance"]["scale"] = args.scale
        doc["provenance"]["sizes"] = {k: (v if k.endswith(("_us", "_chunk")) else
                                          max(1, int(round(v * args.scale))))
                                      for k, v in SIZES.items()}
        write_cost_file(doc, args.out)
    except XbqError as exc:
        print(f"python -m xbq.study.hostcosts: error: {exc}", file=sys.stderr)
        return 1
    print(report(doc))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
