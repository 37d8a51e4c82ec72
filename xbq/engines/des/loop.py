"""The twin's event loop: pop the earliest event, check the window, dispatch it to the handler
of the kernel path it stands for, until the window closes and the run has drained (SimPy's
``step()``, in virtual nanoseconds).

Events (:mod:`xbq.engines.des.state`): a CPU's next step (``EV_STEP``, handled by
:func:`xbq.engines.des.tasks.step`), the end of a vCPU's pCPU slice, the device's completion
(:func:`end_io_event`: queued as a ``T_DONE`` task on the ring's dom0 vCPU), the frontend's
upcall (:func:`blkif_interrupt_event`), the backend's upcall (:func:`xen_blkif_be_int`: clear
the channel, wake the thread after ``be_wake_ns``) and the thread's wake-up, an open loop's
arrival, the end of a think time, the warm-up check, and the end of the window. After the
window the run drains (no new I/O) until every issued request has completed.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.engines.des.backend import device_done
from xbq.engines.des.cpus import enqueue, pcpu_slice
from xbq.engines.des.heap import LINE_WAKE, heap_pop, pending, push, push_line
from xbq.engines.des.jobs import io_alloc, io_arrive, job_wake
from xbq.engines.des.state import (
    BE_ASLEEP,
    BE_AWAKE,
    CPU_MASK,
    ERR_EVENT_LIMIT,
    ERR_HEAP_FULL,
    EV_ARRIVAL,
    EV_BLKIF_BE_INT,
    EV_BLKIF_INTERRUPT,
    EV_END,
    EV_END_IO,
    EV_SLICE,
    EV_STEP,
    EV_THINK,
    EV_WARM,
    EV_XEN_BLKIF_SCHEDULE,
    GEN_SHIFT,
    IRQ_IDLE,
    IRQ_QUEUED,
    IRQ_RUNNING,
    T_BE,
    T_DONE,
    T_IRQ,
    clip,
    ns,
)
from xbq.engines.des.tasks import step
from xbq.workload.rng import rng_exponential
from xbq.xen.evtchn import evtchn_test_and_clear_pending


@kernel
def _snapshot(tw, io, end):
    """Copy the frontend's and backend's counters into each ring's start or end snapshot."""
    drings = tw.drings
    for r in range(drings.size):
        fs = drings[r].fs1 if end else drings[r].fs0
        bs = drings[r].bs1 if end else drings[r].bs0
        for k in range(fs.size):
            fs[k] = io.fe.rinfo[r].stats[k]
        for k in range(bs.size):
            bs[k] = io.be.rings[r].stats[k]


@kernel(forceinline=True)
def _in_use(ios):
    n = 0
    for tag in range(ios.size):
        n += ios[tag].inuse
    return n


@kernel(forceinline=True)
def end_io_event(tw, io, P, code, t):
    """The device finished request ``code`` (``ring * nr_ents + slot``): free its SSD
    channel, queue ``__end_block_io_op`` on the ring's dom0 vCPU (high priority)."""
    if tw.cfg[0].ssd:
        device_done(tw, io, P, t)
    r = code // tw.cfg[0].nr_ents
    enqueue(tw, P, tw.drings[r].be_vcpu, np.int64(T_DONE), code, True, t)


@kernel(forceinline=True)
def blkif_interrupt_event(tw, P, r, t):
    """The frontend's upcall for ring ``r``: queue its interrupt, or note it for the one
    running."""
    d = tw.drings[r]
    if d.irq_state == IRQ_IDLE:
        d.irq_state = IRQ_QUEUED
        enqueue(tw, P, d.irq_vcpu, np.int64(T_IRQ), r, True, t)
    elif d.irq_state == IRQ_RUNNING:
        d.irq_again = 1


@kernel(forceinline=True)
def xen_blkif_be_int(tw, io, P, r, t):
    """dom0's upcall handler: clear the channel, set ``waiting_reqs``, wake the thread (it
    runs ``be_wake_ns`` later; at once, without a switch, while it still polls:
    ``be_poll_ns``)."""
    evtchn_test_and_clear_pending(io.be.evtchn, io.be.rings[r].evtchn)
    d = tw.drings[r]
    if d.be_state == BE_ASLEEP:
        d.be_state = BE_AWAKE
        delay = ns(P.be_wake_ns)
        if t < d.be_sleep_since + ns(P.be_poll_ns):  # still polling: never slept
            delay = 0
            d.be_slept = 0
        push_line(tw.heap, tw.evl[0], LINE_WAKE, t + delay,
                  np.int64(EV_XEN_BLKIF_SCHEDULE), r)
    else:
        d.be_again = 1


@kernel
def arrival(tw, P, j, t):
    """An open loop's I/O arrives for job ``j`` (none during the drain): take a tag or drop
    it; the next arrival follows."""
    if tw.run[0].draining:
        return
    tag = io_alloc(tw, t, j)
    if tag < 0:
        tw.run[0].dropped += 1
    else:
        io_arrive(tw, j, tag)
        job_wake(tw, P, j, t)
    njobs = tw.cfg[0].jobs
    push(tw.heap, tw.evl[0], t + ns(rng_exponential(tw.streams[njobs + j], P.arrival_ns)),
         np.int64(EV_ARRIVAL), j)


@kernel
def warm_check(tw, io, t):
    """The warm-up ends once ``warm_ios`` I/Os completed (or at ``warm_max``): the window
    opens; otherwise look again later."""
    cfg = tw.cfg[0]
    run = tw.run[0]
    if run.completed < cfg.warm_ios and t < cfg.warm_max:
        later = cfg.warm_min // 4 if cfg.warm_min >= 400_000 else np.int64(100_000)
        push(tw.heap, tw.evl[0], t + later, np.int64(EV_WARM), np.int64(0))
        return
    run.t_warm = t
    run.t_end = t + cfg.duration
    push(tw.heap, tw.evl[0], run.t_end, np.int64(EV_END), np.int64(0))
    _snapshot(tw, io, False)


@kernel
def window_end(tw, io, events):
    """The window closes: snapshot the counters, count what is in flight; the drain
    begins."""
    run = tw.run[0]
    _snapshot(tw, io, True)
    run.in_flight = _in_use(tw.ios)
    run.events = events
    run.draining = 1


@kernel
def _start(tw, P):
    """The warm-up check, and every job's first I/O (or first arrival)."""
    cfg = tw.cfg[0]
    push(tw.heap, tw.evl[0], cfg.warm_min, np.int64(EV_WARM), np.int64(0))
    for j in range(cfg.jobs):
        if cfg.open:
            push(tw.heap, tw.evl[0], ns(rng_exponential(tw.streams[cfg.jobs + j],
                                                        P.arrival_ns)),
                 np.int64(EV_ARRIVAL), j)
        else:
            tw.jobs[j].credits = cfg.iodepth
            job_wake(tw, P, j, np.int64(0))


@kernel
def _finish(tw, events):
    """Close the open intervals at the end of the window."""
    run = tw.run[0]
    w0 = run.t_warm
    w1 = run.t_end
    for c in range(tw.cpus.size):
        v = tw.cpus[c]
        if v.idle == 0:
            v.busy += clip(v.busy_since, w1, w0, w1)
            if v.v_run == 0:
                v.steal += clip(v.v_wait_since, w1, w0, w1)
    for tag in range(tw.ios.size):
        if tw.ios[tag].inuse:
            run.acc_area += clip(tw.ios[tag].start, w1, w0, w1)
    if not run.draining:
        run.events = events


@kernel
def run(tw, io, P_arr):
    """Run the event loop through the measured window and the drain; every result lands in
    the records (``run``'s accumulators and histogram, the CPUs' times, the rings'
    snapshots). Returns the events handled."""
    P = P_arr[0]
    cfg = tw.cfg[0]
    rn = tw.run[0]
    evl = tw.evl[0]
    _start(tw, P)
    events = 0
    while pending(evl) > 0 and rn.err == 0:
        if evl.full:
            rn.err = ERR_HEAP_FULL
            break
        if rn.draining and rn.parts_out == 0:
            break  # drained: every issued request completed
        t, _, kind, a = heap_pop(tw.heap, evl)
        events += 1
        if events == cfg.max_events:
            rn.err = ERR_EVENT_LIMIT
        if rn.draining and t > rn.t_end + cfg.drain_max:
            break  # what is still outstanding is lost
        if kind == EV_STEP:
            cpu = a & CPU_MASK
            if (a >> GEN_SHIFT) != tw.cpus[cpu].v_gen:
                continue  # cancelled: its vCPU was preempted (the step resumes later)
            tw.cpus[cpu].v_due = -1
            step(tw, io, P, cpu, t)
        elif kind == EV_SLICE:
            cpu = a & CPU_MASK
            if (a >> GEN_SHIFT) == tw.cpus[cpu].v_rgen and tw.cpus[cpu].v_run:
                pcpu_slice(tw, P, cpu, t)
        elif kind == EV_END_IO:
            end_io_event(tw, io, P, a, t)
        elif kind == EV_BLKIF_INTERRUPT:
            blkif_interrupt_event(tw, P, a, t)
        elif kind == EV_BLKIF_BE_INT:
            xen_blkif_be_int(tw, io, P, a, t)
        elif kind == EV_XEN_BLKIF_SCHEDULE:
            enqueue(tw, P, tw.drings[a].be_vcpu, np.int64(T_BE), a, False, t)
        elif kind == EV_ARRIVAL:
            arrival(tw, P, a, t)
        elif kind == EV_THINK:
            tw.jobs[a].credits += 1
            job_wake(tw, P, a, t)
        elif kind == EV_WARM:
            warm_check(tw, io, t)
        elif kind == EV_END:
            window_end(tw, io, events)
    _finish(tw, events)
    return events
