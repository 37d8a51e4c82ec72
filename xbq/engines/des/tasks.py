"""The twin's tasks, step by step: fio jobs, the guest interrupt, blkback's ring threads and
the device's completions. Each step calls the real protocol code and charges its cost.

``T_JOB`` (fio job ``j``)
    take a free request of its queue (a blk-mq tag; none free: sleep until a completion
    frees one, when ``tag_wait`` is on), draw an I/O, charge the submit cost, take the
    ring's lock, queue the I/O through blk-mq (split at ``max_sectors``; a full ring stops
    the queue and the request waits on it), flush (the backend's upcall follows if the
    event channel raises one), release.
``T_IRQ`` (ring ``r``'s upcall, on the vCPU its event is bound to)
    entry, take the lock, ``blkif_interrupt``, restart the stopped queue, release, complete
    the I/Os (after the lock, as ``blk_mq_complete_request``).
``T_BE`` (ring ``r``'s blkback thread)
    consume a batch (``__do_block_io_op``, or ``do_block_io_op`` with its final check when
    nothing is left), take the optional device-wide backend lock once per request, hand the
    requests to the device, loop until the final check finds nothing.
``T_DONE`` (a device completion, on the ring's dom0 vCPU)
    ``xen_blkbk_complete_io``: unmap, ``make_response``, notify.

A request becomes visible on the ring when its critical section starts (its cost is charged
after), a response when its completion task starts. ``fe`` and ``be`` are the argument
tuples of blkfront's and blkback's kernels (:meth:`xbq.blkif.blkfront.blkfront_device.args`,
:meth:`xbq.blkif.blkback.xen_blkif_device.args`).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blk_mq import (
    BLK_MQ_PARKED,
    blk_mq_queue_rq,
    blk_mq_run_hw_queue,
    blk_rq_nr_pieces,
    blk_rq_piece,
    blkif_ring_used,
)
from xbq.blkif.blkback import (
    BS_MAP_OPS,
    BS_NOTIFY,
    BS_PERSISTENT_HITS,
    BS_REQUESTS,
    BS_UNMAP_OPS,
    __do_block_io_op,
    blkback_pop_dispatched,
    do_block_io_op,
    xen_blkbk_complete_io,
)
from xbq.blkif.blkfront import blkif_interrupt, flush_requests
from xbq.engines.des.cpus import HI, _q_push, enqueue, phase, switch, task_end, yield_or_continue
from xbq.engines.des.heap import push, push_line
from xbq.engines.des.locks import lock_acquire, lock_granted, lock_release
from xbq.engines.des.state import (
    ACTOR_MASK,
    ERR_DUPLICATE,
    ERR_PROTOCOL,
    ERR_QUEUE,
    EV_BE_EVT,
    EV_DEV,
    EV_FE_EVT,
    EV_THINK,
    INJECT_DROP,
    INJECT_NONE,
    LINE_DEV,
    PH_BE_BATCH,
    PH_BE_HELD,
    PH_BE_LOCKED,
    PH_BE_LOOP,
    PH_BE_SLEEP,
    PH_COMPLETE,
    PH_CRITICAL,
    PH_LOCK,
    PH_RELEASE,
    PH_START,
    T_BE,
    T_DONE,
    T_IRQ,
    T_JOB,
    TASK_SHIFT,
    clip,
    ns,
)
from xbq.workload.fio import next_io
from xbq.workload.hist import hist_record
from xbq.workload.rng import rng_exponential
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE
from xbq.xen.evtchn import evtchn_test_and_clear_pending

# --- jobs ------------------------------------------------------------------------------------


@kernel(forceinline=True)
def job_has_work(sim, jobs, j):
    """Job ``j`` may start an I/O: arrived ones (open loop) or credits (closed loop), and
    never during the drain."""
    if sim.draining:
        return False  # the drain: no new I/O
    return jobs[j].pend_n > 0 if sim.open else jobs[j].credits > 0


@kernel(forceinline=True)
def io_alloc(sim, ios, t, j):
    """Take a free I/O tag for job ``j`` at ``t``; -1 if none is left."""
    tag = sim.io_free
    if tag < 0:
        return -1
    io = ios[tag]
    sim.io_free = io.next
    io.inuse = 1
    io.start = t
    io.job = j
    return tag


@kernel(forceinline=True)
def job_unit(sim, cpus, heap, jobs, pend, ios, streams, wl, P, cpu, j, t, extra):
    """Start one submission of job ``j``: take an I/O, draw it, charge the submit cost."""
    job = jobs[j]
    if sim.open:
        tag = pend[j, job.pend_h]
        job.pend_h = (job.pend_h + 1) % pend.shape[1]
        job.pend_n -= 1
    else:
        tag = io_alloc(sim, ios, t, j)
        job.credits -= 1
    is_write, sector, nsect = next_io(wl, streams[j])
    io = ios[tag]
    io.write = 1 if is_write else 0
    io.sector = sector
    io.nsect = nsect
    cpus[cpu].cur = (np.int64(T_JOB) << TASK_SHIFT) | j
    cpus[cpu].phase = PH_LOCK
    sim.acc_submitted += 1.0
    job.tag = tag
    phase(sim, cpus, heap, cpu, t + ns(extra + P.submit_ns), t)
    return tag


@kernel(forceinline=True)
def job_next(sim, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, wl, P, cpu, j, t,
             extra):
    """Job ``j`` starts its next I/O if its queue has a free request (a blk-mq tag, taken in
    ``blk_mq_get_request`` before the driver sees it); otherwise its thread sleeps in
    ``blk_mq_get_tag`` until a completion frees one (:func:`tag_free`)."""
    if sim.tag_depth > 0:
        d = drings[jobs[j].ring]
        if d.tags >= sim.tag_depth:
            jobs[j].state = 2
            jobs[j].slept = 1
            d.tag_wait += 1
            sim.acc_tag_waits += 1.0 if t >= sim.t_warm and not sim.draining else 0.0
            task_end(sim, cpus, runq, prq, heap, P, cpu, t)
            return
        d.tags += 1
    job_unit(sim, cpus, heap, jobs, pend, ios, streams, wl, P, cpu, j, t, extra)


@kernel(forceinline=True)
def tag_free(sim, cpus, runq, prq, heap, jobs, drings, P, r, t):
    """A request of queue ``r`` completed: its tag is free; wake one job waiting for it
    (the next in round-robin order)."""
    d = drings[r]
    d.tags -= 1
    if d.tag_wait == 0:
        return
    n = jobs.shape[0]
    for k in range(n):
        j = (d.tag_rr + k) % n
        if jobs[j].state == 2 and jobs[j].ring == r:
            d.tag_rr = (j + 1) % n
            d.tag_wait -= 1
            jobs[j].state = 0
            job_wake(sim, cpus, runq, prq, heap, jobs, P, j, t)
            return


@kernel(forceinline=True)
def note_occupancy(sim, rinfo, r):
    """Keep the most requests ever outstanding on one ring."""
    occ = blkif_ring_used(rinfo[r])
    if occ > sim.acc_max_occ:
        sim.acc_max_occ = occ


@kernel(forceinline=True)
def flush(sim, heap, fe, ev, bport, P, r, t_end_cs):
    """``flush_requests`` on ring ``r``; schedule the backend's upcall; return the sender's
    cost."""
    rinfo, mem = fe[1], fe[5]
    up0 = ev[bport].upcalls
    cost = 0.0
    if flush_requests(rinfo, mem, ev, r):
        cost = P.evtchn_send_ns
    if ev[bport].upcalls > up0:
        push(heap, sim, t_end_cs + ns(cost + P.evtchn_latency_ns), np.int64(EV_BE_EVT), r)
    return cost


@kernel(forceinline=True)
def job_cs(sim, heap, jobs, ios, hctx, dispatch, fe, ev, bport, P, j, tag, t):
    """Job ``j`` holds its ring's lock: queue the I/O (split at max_sectors) and flush."""
    info, rinfo, shadow, grants, gnt, mem = fe
    r = jobs[j].ring
    ms = sim.max_sectors
    io = ios[tag]
    nparts = blk_rq_nr_pieces(io.nsect, ms)
    io.parts = nparts
    io.issued += nparts  # counted before any part becomes visible to the backend
    sim.acc_parts_out += nparts
    op = BLKIF_OP_WRITE if io.write else BLKIF_OP_READ
    queued = 0
    for p in range(nparts):
        off, n = blk_rq_piece(io.nsect, ms, p)
        rid = blk_mq_queue_rq(hctx, dispatch, info, rinfo, shadow, grants, gnt, mem, r, op,
                              io.sector + off, n, sim.buf_pfn, tag)
        if rid >= 0:
            queued += 1
        elif rid != BLK_MQ_PARKED:
            sim.acc_err = ERR_QUEUE
    cost = nparts * P.fe_cs_ns + (P.sq_locked_ns if sim.sq else 0.0)
    if queued:
        note_occupancy(sim, rinfo, r)
        cost += flush(sim, heap, fe, ev, bport, P, r, t + ns(cost))
    return cost


@kernel(forceinline=True)
def job_wake(sim, cpus, runq, prq, heap, jobs, P, j, t):
    """Queue job ``j``'s thread on its vCPU if it sleeps and has work."""
    if jobs[j].state == 0 and job_has_work(sim, jobs, j):
        jobs[j].state = 1
        enqueue(sim, cpus, runq, prq, heap, P, jobs[j].cpu, np.int64(T_JOB), j, 0, 0, t)


@kernel(forceinline=True)
def io_done(sim, cpus, runq, prq, heap, jobs, ios, streams, drings, P, tag, t):
    """Every part of I/O ``tag`` has completed at ``t``: account it, give the job a credit."""
    w0 = sim.t_warm
    w1 = sim.t_end
    io = ios[tag]
    st = io.start
    sim.acc_completed += 1.0
    sim.acc_area += clip(st, t, w0, w1)
    if t >= w0 and not sim.draining:
        lat = t - st
        sim.acc_done += 1.0
        sim.acc_lat_sum += lat
        sim.acc_bytes += io.nsect * 512.0
        if io.write:
            sim.acc_writes += 1.0
        else:
            sim.acc_reads += 1.0
        hist_record(sim.hist, lat)
    io.inuse = 0
    io.next = sim.io_free
    sim.io_free = tag
    j = io.job
    if sim.tag_depth > 0:
        tag_free(sim, cpus, runq, prq, heap, jobs, drings, P, jobs[j].ring, t)
    if not sim.open:
        if P.think_ns > 0.0:
            z = rng_exponential(streams[j], P.think_ns) if P.think_exp != 0 else P.think_ns
            push(heap, sim, t + ns(z), np.int64(EV_THINK), j)
        else:
            jobs[j].credits += 1
            job_wake(sim, cpus, runq, prq, heap, jobs, P, j, t)


# --- the guest interrupt -------------------------------------------------------------------


@kernel(forceinline=True)
def irq_cs(sim, heap, drings, done, hctx, dispatch, fe, ev, bport, P, r, t):
    """Ring ``r``'s handler holds the lock: ``blkif_interrupt``, then restart the queue."""
    info, rinfo, shadow, grants, gnt, mem = fe
    n = blkif_interrupt(info, rinfo, shadow, grants, gnt, mem, r, done[r, 0], done[r, 1])
    if n < 0:
        sim.acc_err = ERR_PROTOCOL
        n = 0
    drings[r].irq_ndone = n
    queued = blk_mq_run_hw_queue(hctx, dispatch, info, rinfo, shadow, grants, gnt, mem, r)
    if queued < 0:
        sim.acc_err = ERR_QUEUE
        queued = 0
    cost = P.irq_base_ns + n * P.irq_per_rsp_ns + queued * P.fe_cs_ns
    if queued:
        note_occupancy(sim, rinfo, r)
        cost += flush(sim, heap, fe, ev, bport, P, r, t + ns(cost))
    return cost


@kernel(forceinline=True)
def irq_finish(sim, cpus, runq, prq, heap, jobs, ios, streams, drings, done, P, cpu, r, t):
    """After the lock: complete the I/Os the interrupt consumed, then end the task."""
    d = drings[r]
    for k in range(d.irq_ndone):
        tag = done[r, 0, k]
        sim.acc_parts_done += 1.0
        times = 1
        if sim.inject != INJECT_NONE and sim.acc_parts_done == sim.inject_at:
            times = 0 if sim.inject == INJECT_DROP else 2  # the test hook
        io = ios[tag]
        for _ in range(times):
            if io.completed >= io.issued:  # more completions than issues
                sim.acc_dup += 1.0
                sim.acc_err_tag = tag
                sim.acc_err = ERR_DUPLICATE
                break
            io.completed += 1
            sim.acc_parts_out -= 1.0
            io.parts -= 1
            if io.parts == 0:
                io_done(sim, cpus, runq, prq, heap, jobs, ios, streams, drings, P, tag, t)
    d.irq_ndone = 0
    if d.irq_again:
        d.irq_state = 1
        _q_push(cpus, runq, cpu, HI, (np.int64(T_IRQ) << TASK_SHIFT) | r, 0)
    else:
        d.irq_state = 0
    task_end(sim, cpus, runq, prq, heap, P, cpu, t)


# --- the backend ------------------------------------------------------------------------------


@kernel(forceinline=True)
def be_consume(sim, cpus, heap, drings, be, P, cpu, r, t, extra):
    """blkback's thread loop, one pass: consume what the ring holds, charge the batch.

    When nothing is left (``do_block_io_op``'s final check armed ``req_event``), the thread
    will sleep at the end of this step (``PH_BE_SLEEP``)."""
    blkif, rings, pending, pgnt, maptrack, gnt, active, mem, ev, vbd, disk = be
    st = rings[r].stats
    n0 = st[BS_REQUESTS]
    m0 = st[BS_MAP_OPS]
    h0 = st[BS_PERSISTENT_HITS]
    drings[r].be_again = 0  # ring->waiting_reqs = 0, before looking for work
    __do_block_io_op(blkif[0], rings[r], pending[r], pgnt[r], maptrack[r], gnt, active, mem,
                     ev, vbd[0], disk)
    if st[BS_REQUESTS] == n0:
        do_block_io_op(blkif, rings, pending, pgnt, maptrack, gnt, active, mem, ev, vbd, disk,
                       r)
    n = st[BS_REQUESTS] - n0
    cpus[cpu].cur = (np.int64(T_BE) << TASK_SHIFT) | r
    if n == 0:
        cpus[cpu].phase = PH_BE_SLEEP
        phase(sim, cpus, heap, cpu, t + ns(extra), t)
        return
    cost = extra + P.be_batch_ns + n * P.be_req_ns + (st[BS_MAP_OPS] - m0) * P.gnt_map_ns \
        + (st[BS_PERSISTENT_HITS] - h0) * P.pgnt_hit_ns
    cpus[cpu].phase = PH_BE_BATCH
    drings[r].be_n = n  # requests of this batch still to take the shared backend lock
    phase(sim, cpus, heap, cpu, t + ns(cost), t)


@kernel(forceinline=True)
def dev_start(sim, heap, streams, dq, P, code, nsect, t):
    """Hand one request to the device: null (fixed latency) or SSD (``channels`` servers)."""
    w0 = sim.t_warm
    w1 = sim.t_end
    if not sim.ssd:
        d = ns(P.null_ns)
        sim.acc_dev_busy += clip(t, t + d, w0, w1)
        push_line(heap, sim, LINE_DEV, t + d, np.int64(EV_DEV), code)
        return
    if sim.dev_busy < sim.channels:
        sim.dev_busy += 1
        mean = P.ssd_base_ns + P.ssd_per_sector_ns * nsect
        d = rng_exponential(streams[streams.shape[0] - 1], mean) if P.ssd_exp != 0 else mean
        di = ns(d)
        sim.acc_dev_busy += clip(t, t + di, w0, w1)
        push(heap, sim, t + di, np.int64(EV_DEV), code)
    else:
        cap = dq.shape[0]
        dq[(sim.dq_h + sim.dq_n) % cap] = code
        sim.dq_n += 1


@kernel(forceinline=True)
def be_dispatch(sim, heap, streams, dq, be, P, r, t):
    """The requests blkback handed to the device this pass start there."""
    rings, pending = be[1], be[2]
    ents = sim.nr_ents
    while True:
        p = blkback_pop_dispatched(rings[r], pending[r])
        if p < 0:
            break
        dev_start(sim, heap, streams, dq, P, r * ents + p, pending[r, p].nr_sects, t)


@kernel(forceinline=True)
def be_complete(sim, cpus, heap, be, fport, P, cpu, code, t):
    """A device completion on dom0: ``xen_blkbk_complete_io`` (unmap, make_response, notify)."""
    blkif, rings, pending, pgnt, maptrack, gnt, active, mem, ev, vbd, disk = be
    ents = sim.nr_ents
    r = code // ents
    p = code % ents
    up0 = ev[fport].upcalls
    st = rings[r].stats
    u0 = st[BS_UNMAP_OPS]
    nt0 = st[BS_NOTIFY]
    xen_blkbk_complete_io(blkif[0], rings[r], pending[r], pgnt[r], maptrack[r], gnt, active,
                          mem, ev, vbd[0], disk, p)
    cost = P.be_done_ns + (st[BS_UNMAP_OPS] - u0) * P.gnt_unmap_ns
    if st[BS_NOTIFY] > nt0:
        cost += P.evtchn_send_ns
    if ev[fport].upcalls > up0:
        push(heap, sim, t + ns(cost + P.evtchn_latency_ns), np.int64(EV_FE_EVT), r)
    cpus[cpu].phase = 0
    phase(sim, cpus, heap, cpu, t + ns(cost), t)


# --- one step of a CPU ----------------------------------------------------------------------------


@kernel(forceinline=True)
def on_phase(sim, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, done, locks,
             lockq, dq, hctx, dispatch, fe, be, wl, P, cpu, t):
    """The CPU's pending step is due at ``t``: run it (the task's phase decides what)."""
    c = cpus[cpu]
    code = c.cur
    kind = code >> TASK_SHIFT
    a = code & ACTOR_MASK
    ph = c.phase
    rinfo = fe[1]
    ev = be[8]
    rings = be[1]
    if ph == PH_START and kind == T_JOB:
        extra = switch(sim, cpus, P, cpu, a, jobs[a].slept, t)
        jobs[a].slept = 0
        job_next(sim, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, wl, P, cpu, a,
                 t, extra)
    elif ph == PH_START and kind == T_IRQ:
        evtchn_test_and_clear_pending(ev, rinfo[a].evtchn)
        drings[a].irq_state = 2
        drings[a].irq_again = 0
        c.phase = PH_LOCK
        phase(sim, cpus, heap, cpu, t + ns(P.irq_entry_ns), t)
    elif ph == PH_START and kind == T_DONE:
        be_complete(sim, cpus, heap, be, rinfo[a // sim.nr_ents].evtchn, P, cpu, a, t)
    elif kind == T_JOB:
        lk = 0 if sim.nflocks == 1 else jobs[a].ring
        if ph == PH_LOCK:
            c.phase = PH_CRITICAL
            lock_acquire(sim, cpus, heap, locks, lockq, P, lk, cpu, t)
        elif ph == PH_CRITICAL:
            lock_granted(sim, cpus, cpu, t)
            cost = job_cs(sim, heap, jobs, ios, hctx, dispatch, fe, ev,
                          rings[jobs[a].ring].evtchn, P, a, jobs[a].tag, t)
            c.phase = PH_RELEASE
            phase(sim, cpus, heap, cpu, t + ns(cost), t)
        else:
            lock_release(sim, cpus, heap, locks, lockq, P, lk, cpu, t)
            if job_has_work(sim, jobs, a):
                if yield_or_continue(sim, cpus, runq, prq, heap, P, cpu, np.int64(T_JOB), a,
                                     t):
                    job_next(sim, cpus, runq, prq, heap, jobs, pend, ios, streams, drings, wl,
                             P, cpu, a, t, 0.0)
            else:
                jobs[a].state = 0
                jobs[a].slept = 1
                task_end(sim, cpus, runq, prq, heap, P, cpu, t)
    elif kind == T_IRQ:
        lk = 0 if sim.nflocks == 1 else a
        if ph == PH_LOCK:
            c.phase = PH_CRITICAL
            lock_acquire(sim, cpus, heap, locks, lockq, P, lk, cpu, t)
        elif ph == PH_CRITICAL:
            lock_granted(sim, cpus, cpu, t)
            cost = irq_cs(sim, heap, drings, done, hctx, dispatch, fe, ev, rings[a].evtchn, P,
                          a, t)
            c.phase = PH_RELEASE
            phase(sim, cpus, heap, cpu, t + ns(cost), t)
        elif ph == PH_RELEASE:
            lock_release(sim, cpus, heap, locks, lockq, P, lk, cpu, t)
            c.phase = PH_COMPLETE
            phase(sim, cpus, heap, cpu, t + ns(drings[a].irq_ndone * P.complete_ns), t)
        else:
            irq_finish(sim, cpus, runq, prq, heap, jobs, ios, streams, drings, done, P, cpu, a,
                       t)
    elif kind == T_BE:
        on_backend_phase(sim, cpus, runq, prq, heap, streams, drings, locks, lockq, dq, be, P,
                         cpu, a, ph, t)
    else:
        task_end(sim, cpus, runq, prq, heap, P, cpu, t)


@kernel(forceinline=True)
def on_backend_phase(sim, cpus, runq, prq, heap, streams, drings, locks, lockq, dq, be, P,
                     cpu, a, ph, t):
    """One step of ring ``a``'s blkback thread (see the module docstring)."""
    c = cpus[cpu]
    belock = sim.belock + (a if P.be_pools_per_ring != 0 else 0)
    if ph == PH_START or ph == PH_BE_LOOP:  # (re)start the loop: consume a batch
        extra = 0.0
        if ph == PH_START:
            extra = switch(sim, cpus, P, cpu, sim.jobs + a, drings[a].be_slept, t)
            drings[a].be_slept = 0
        be_consume(sim, cpus, heap, drings, be, P, cpu, a, t, extra)
        return
    if ph == PH_BE_SLEEP:  # nothing left: sleep until the next upcall ...
        if drings[a].be_again:  # ... unless one came since the pass began (waiting_reqs)
            c.phase = PH_BE_LOOP
            phase(sim, cpus, heap, cpu, t, t)
            return
        drings[a].be_state = 0
        drings[a].be_slept = 1
        task_end(sim, cpus, runq, prq, heap, P, cpu, t)
        return
    if ph == PH_BE_BATCH and belock >= 0 and P.be_shared_lock_ns > 0.0:
        c.phase = PH_BE_LOCKED
        lock_acquire(sim, cpus, heap, locks, lockq, P, belock, cpu, t)
        return
    if ph == PH_BE_LOCKED:
        lock_granted(sim, cpus, cpu, t)
        c.phase = PH_BE_HELD
        phase(sim, cpus, heap, cpu, t + ns(P.be_shared_lock_ns), t)
        return
    if ph == PH_BE_HELD:  # one request's persistent-grant lookups done: release, next request
        lock_release(sim, cpus, heap, locks, lockq, P, belock, cpu, t)
        drings[a].be_n -= 1
        if drings[a].be_n > 0:
            c.phase = PH_BE_LOCKED
            lock_acquire(sim, cpus, heap, locks, lockq, P, belock, cpu, t)
            return
    be_dispatch(sim, heap, streams, dq, be, P, a, t)
    if yield_or_continue(sim, cpus, runq, prq, heap, P, cpu, np.int64(T_BE), a, t):
        c.phase = PH_BE_LOOP
        phase(sim, cpus, heap, cpu, t, t)
