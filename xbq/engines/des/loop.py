"""The twin's event loop: pop the earliest event, handle it, until the window closes and the
run has drained.

Events (:mod:`xbq.engines.des.state`): a CPU's next step (``EV_PHASE``, handled by
:func:`xbq.engines.des.tasks.on_phase`), the end of a vCPU's pCPU slice, a device completion
(queued as a ``T_DONE`` task on the ring's dom0 vCPU), the frontend's upcall (the interrupt
task, or a note that another event came while it runs), the backend's upcall
(``xen_blkif_be_int``: clear the channel, wake the thread after ``be_wake_ns``), an open
loop's arrival, the end of a think time, the warm-up check, and the end of the window. After
the window the run drains (no new I/O) until every issued request has completed.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.engines.des.cpus import enqueue, pcpu_slice
from xbq.engines.des.heap import heap_pop, pending, push, push_line
from xbq.engines.des.state import (
    CPU_MASK,
    ERR_EVENT_LIMIT,
    EV_ARRIVAL,
    EV_BE_EVT,
    EV_BE_WAKE,
    EV_DEV,
    EV_END,
    EV_FE_EVT,
    EV_PHASE,
    EV_SLICE,
    EV_THINK,
    EV_WARM,
    GEN_SHIFT,
    LINE_WAKE,
    NEVER,
    T_BE,
    T_DONE,
    T_IRQ,
    clip,
    ns,
)
from xbq.engines.des.tasks import dev_start, io_alloc, job_wake, on_phase
from xbq.workload.rng import rng_exponential
from xbq.xen.evtchn import evtchn_test_and_clear_pending


@kernel(forceinline=True)
def _snapshot(drings, rinfo, rings, end):
    """Copy the frontend's and backend's counters into each ring's start or end snapshot."""
    for r in range(drings.size):
        fs = drings[r].fs1 if end else drings[r].fs0
        bs = drings[r].bs1 if end else drings[r].bs0
        for k in range(fs.size):
            fs[k] = rinfo[r].stats[k]
        for k in range(bs.size):
            bs[k] = rings[r].stats[k]


@kernel(forceinline=True)
def _count_in_use(ios):
    n = 0
    for tag in range(ios.size):
        n += ios[tag].inuse
    return n


@kernel
def run(sim_arr, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, done, locks, lockq,
        dq, hctx, dispatch, fe, be, wl, P_arr):
    """Run the event loop through the measured window and the drain; every result lands in
    the records (``sim``'s accumulators and histogram, the CPUs' times, the rings'
    snapshots). Returns the events handled."""
    sim = sim_arr[0]
    P = P_arr[0]
    rinfo = fe[1]
    rings, ev = be[1], be[8]
    njobs = sim.jobs
    sim.t_warm = NEVER
    sim.t_end = NEVER
    push(heap, sim, sim.warm_min, np.int64(EV_WARM), np.int64(0))
    for j in range(njobs):
        if sim.open:
            push(heap, sim, ns(rng_exponential(streams[njobs + j], P.arrival_ns)),
                 np.int64(EV_ARRIVAL), j)
        else:
            jobs[j].credits = sim.iodepth
            job_wake(sim, cpus, runq, prq, heap, jobs, P, j, np.int64(0))
    events = 0
    t = 0
    while pending(sim) > 0 and sim.acc_err == 0.0:
        if sim.draining and sim.acc_parts_out == 0.0:
            break  # drained: every issued request completed
        t, _, kind, a = heap_pop(heap, sim)
        events += 1
        if events == sim.max_events:
            sim.acc_err = ERR_EVENT_LIMIT
        if sim.draining:
            sim.acc_drain_events += 1.0
            if t > sim.t_end + sim.drain_max:
                break  # what is still outstanding is lost
        if kind == EV_PHASE:
            cpu = a & CPU_MASK
            if (a >> GEN_SHIFT) != cpus[cpu].v_gen:
                continue  # cancelled: its vCPU was preempted (the step resumes later)
            cpus[cpu].v_due = -1
            on_phase(sim, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, done,
                     locks, lockq, dq, hctx, dispatch, fe, be, wl, P, cpu, t)
        elif kind == EV_SLICE:
            cpu = a & CPU_MASK
            if (a >> GEN_SHIFT) == cpus[cpu].v_rgen and cpus[cpu].v_run:
                pcpu_slice(sim, cpus, prq, heap, P, cpu, t)
        elif kind == EV_DEV:
            if sim.ssd:
                sim.dev_busy -= 1
                if sim.dq_n > 0:
                    c = dq[sim.dq_h]
                    sim.dq_h = (sim.dq_h + 1) % dq.shape[0]
                    sim.dq_n -= 1
                    ents = sim.nr_ents
                    dev_start(sim, heap, streams, dq, P, c, be[2][c // ents, c % ents].nr_sects,
                              t)
            r = a // sim.nr_ents
            enqueue(sim, cpus, runq, prq, heap, P, drings[r].be_cpu, np.int64(T_DONE), a, 1, 0,
                    t)
        elif kind == EV_FE_EVT:
            d = drings[a]
            if d.irq_state == 0:
                d.irq_state = 1
                enqueue(sim, cpus, runq, prq, heap, P, d.irq_cpu, np.int64(T_IRQ), a, 1, 0, t)
            elif d.irq_state == 2:
                d.irq_again = 1
        elif kind == EV_BE_EVT:
            # dom0's upcall handler (xen_blkif_be_int): clear, set waiting_reqs, wake
            evtchn_test_and_clear_pending(ev, rings[a].evtchn)
            if drings[a].be_state == 0:
                drings[a].be_state = 1
                push_line(heap, sim, LINE_WAKE, t + ns(P.be_wake_ns), np.int64(EV_BE_WAKE),
                          a)
            else:
                drings[a].be_again = 1
        elif kind == EV_BE_WAKE:
            enqueue(sim, cpus, runq, prq, heap, P, drings[a].be_cpu, np.int64(T_BE), a, 0, 0,
                    t)
        elif kind == EV_ARRIVAL:
            if sim.draining:
                continue  # the drain: arrivals stop
            tag = io_alloc(sim, ios, t, a)
            if tag < 0:
                sim.acc_dropped += 1.0
            else:
                job = jobs[a]
                cap = pend.shape[1]
                pend[a, (job.pend_h + job.pend_n) % cap] = tag
                job.pend_n += 1
                job_wake(sim, cpus, runq, prq, heap, jobs, P, a, t)
            push(heap, sim, t + ns(rng_exponential(streams[njobs + a], P.arrival_ns)),
                 np.int64(EV_ARRIVAL), a)
        elif kind == EV_THINK:
            jobs[a].credits += 1
            job_wake(sim, cpus, runq, prq, heap, jobs, P, a, t)
        elif kind == EV_WARM:
            if sim.acc_completed < sim.warm_ios and t < sim.warm_max:
                step = sim.warm_min // 4 if sim.warm_min >= 400_000 else np.int64(100_000)
                push(heap, sim, t + step, np.int64(EV_WARM), np.int64(0))  # look again later
                continue
            sim.t_warm = t
            sim.t_end = t + sim.duration
            push(heap, sim, sim.t_end, np.int64(EV_END), np.int64(0))
            _snapshot(drings, rinfo, rings, False)
        elif kind == EV_END:  # the window closes; drain what is in flight
            _snapshot(drings, rinfo, rings, True)
            sim.acc_in_flight = _count_in_use(ios)
            sim.acc_events = events
            sim.draining = 1
    # close the open intervals at the end of the window
    w0 = sim.t_warm
    w1 = sim.t_end
    for c in range(cpus.size):
        v = cpus[c]
        if v.idle == 0:
            v.busy += clip(v.busy_since, w1, w0, w1)
            if v.v_run == 0:
                v.steal += clip(v.v_wait_since, w1, w0, w1)
    for tag in range(ios.size):
        if ios[tag].inuse:
            sim.acc_area += clip(ios[tag].start, w1, w0, w1)
    if not sim.draining:
        sim.acc_events = events
    return events
