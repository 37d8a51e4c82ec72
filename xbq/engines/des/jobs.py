"""The fio job task: take a blk-mq tag, draw an I/O, submit it through blkfront under the
ring's lock, and take the completion back.

A step of job ``j`` on its vCPU (``PH_*`` of :mod:`xbq.engines.des.state`):

``PH_START``
    the thread is switched in (:func:`xbq.engines.des.cpus.switch`) and starts an I/O
    (:func:`blk_mq_get_tag`: no free request on its queue, with ``tag_wait``, and it sleeps);
``PH_LOCK``
    after the submit cost (fio, ``io_submit``, bio and request set-up) it takes the lock;
``PH_CRITICAL``
    it holds it: :func:`blkif_queue_rq_locked` queues the I/O, split at ``max_sectors``,
    through blkfront's ``blkif_queue_rq`` and flushes (the backend's upcall follows if the
    event channel raises one);
``PH_RELEASE``
    it releases the lock and starts its next I/O, yields, or sleeps.

A request becomes visible on the ring when its critical section starts (its cost is charged
after). The completion side (:func:`blk_mq_end_request`) runs in the interrupt task.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blk_mq import (
    BLK_MQ_PARKED,
    blk_rq_nr_pieces,
    blk_rq_piece,
    blkif_queue_rq,
    blkif_ring_used,
)
from xbq.blkif.blkfront import flush_requests
from xbq.engines.des.cpus import enqueue, phase, switch, task_end, yield_or_continue
from xbq.engines.des.heap import push
from xbq.engines.des.locks import lock_granted, spin_lock, spin_unlock
from xbq.engines.des.state import (
    ERR_QUEUE,
    EV_BLKIF_BE_INT,
    EV_THINK,
    JOB_ASLEEP,
    JOB_RUNNABLE,
    JOB_TAG_WAIT,
    NIL,
    PH_CRITICAL,
    PH_LOCK,
    PH_RELEASE,
    PH_START,
    T_JOB,
    TASK_SHIFT,
    clip,
    in_window,
    ns,
)
from xbq.workload.fio import next_io
from xbq.workload.hist import hist_record
from xbq.workload.rng import rng_exponential
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE


@kernel(forceinline=True)
def job_has_work(tw, j):
    """Job ``j`` may start an I/O: arrived ones (open loop) or credits (closed loop), and
    never during the drain."""
    if tw.run[0].draining:
        return False  # the drain: no new I/O
    job = tw.jobs[j]
    return job.pend_head != NIL if tw.cfg[0].open else job.credits > 0


@kernel(forceinline=True)
def io_alloc(tw, t, j):
    """Take a free I/O tag for job ``j`` at ``t``; -1 if none is left."""
    run = tw.run[0]
    tag = run.io_free
    if tag < 0:
        return -1
    io = tw.ios[tag]
    run.io_free = io.next
    io.inuse = 1
    io.start = t
    io.job = j
    return tag


@kernel(forceinline=True)
def io_arrive(tw, j, tag):
    """An open loop's I/O ``tag`` arrived for job ``j``: queue it behind the others."""
    job = tw.jobs[j]
    tw.ios[tag].pend_next = NIL
    if job.pend_head == NIL:
        job.pend_head = tag
    else:
        tw.ios[job.pend_tail].pend_next = tag
    job.pend_tail = tag


@kernel(forceinline=True)
def io_submit(tw, io, P, cpu, j, t, extra):
    """Start one submission of job ``j``: take an I/O, draw it, charge the submit cost."""
    job = tw.jobs[j]
    run = tw.run[0]
    if tw.cfg[0].open:
        tag = job.pend_head
        job.pend_head = tw.ios[tag].pend_next
        if job.pend_head == NIL:
            job.pend_tail = NIL
    else:
        tag = io_alloc(tw, t, j)
        job.credits -= 1
    is_write, sector, nsect = next_io(io.wl, tw.streams[j])
    rq = tw.ios[tag]
    rq.write = 1 if is_write else 0
    rq.sector = sector
    rq.nsect = nsect
    tw.cpus[cpu].cur = (np.int64(T_JOB) << TASK_SHIFT) | j
    tw.cpus[cpu].phase = PH_LOCK
    run.submitted += 1
    job.tag = tag
    phase(tw, cpu, t + ns(extra + P.submit_ns), t)


@kernel(forceinline=True)
def blk_mq_get_tag(tw, io, P, cpu, j, t, extra):
    """Job ``j`` starts its next I/O if its queue has a free request (a blk-mq tag, taken in
    ``blk_mq_get_request`` before the driver sees it); otherwise its thread sleeps in
    ``blk_mq_get_tag`` until a completion frees one (:func:`blk_mq_put_tag`)."""
    cfg = tw.cfg[0]
    if cfg.tag_depth > 0:
        d = tw.drings[tw.jobs[j].ring]
        if d.tags >= cfg.tag_depth:
            tw.jobs[j].state = JOB_TAG_WAIT
            tw.jobs[j].slept = 1
            d.tag_wait += 1
            if in_window(tw.run[0], t):
                tw.run[0].tag_waits += 1
            task_end(tw, P, cpu, t)
            return
        d.tags += 1
    io_submit(tw, io, P, cpu, j, t, extra)


@kernel(forceinline=True)
def job_wake(tw, P, j, t):
    """Queue job ``j``'s thread on its vCPU if it sleeps and has work."""
    if tw.jobs[j].state == JOB_ASLEEP and job_has_work(tw, j):
        tw.jobs[j].state = JOB_RUNNABLE
        enqueue(tw, P, tw.jobs[j].vcpu, np.int64(T_JOB), j, False, t)


@kernel(forceinline=True)
def blk_mq_put_tag(tw, P, r, t):
    """A request of queue ``r`` completed: its tag is free; wake one job waiting for it
    (the next in round-robin order)."""
    d = tw.drings[r]
    d.tags -= 1
    if d.tag_wait == 0:
        return
    jobs = tw.jobs
    n = jobs.shape[0]
    for k in range(n):
        j = (d.tag_rr + k) % n
        if jobs[j].state == JOB_TAG_WAIT and jobs[j].ring == r:
            d.tag_rr = (j + 1) % n
            d.tag_wait -= 1
            jobs[j].state = JOB_ASLEEP
            job_wake(tw, P, j, t)
            return


@kernel(forceinline=True)
def note_occupancy(tw, rinfo, r):
    """Keep the most requests ever outstanding on one ring."""
    occ = blkif_ring_used(rinfo[r])
    if occ > tw.run[0].max_occ:
        tw.run[0].max_occ = occ


@kernel(forceinline=True)
def flush(tw, io, P, r, t_end_cs):
    """``flush_requests`` on ring ``r``; schedule the backend's upcall; return the sender's
    cost."""
    fe = io.fe
    bport = io.be.rings[r].evtchn
    up0 = fe.evtchn[bport].upcalls
    cost = 0.0
    if flush_requests(fe.rinfo, fe.mem, fe.evtchn, r):
        cost = P.evtchn_send_ns
    if fe.evtchn[bport].upcalls > up0:
        push(tw.heap, tw.evl[0], t_end_cs + ns(cost + P.evtchn_latency_ns),
             np.int64(EV_BLKIF_BE_INT), r)
    return cost


@kernel(forceinline=True)
def blkif_queue_rq_locked(tw, io, P, j, tag, t):
    """Job ``j`` holds its ring's lock: queue the I/O through ``blkif_queue_rq`` (split at
    max_sectors) and flush; return the cost."""
    cfg = tw.cfg[0]
    run = tw.run[0]
    fe = io.fe
    r = tw.jobs[j].ring
    ms = cfg.max_sectors
    rq = tw.ios[tag]
    nparts = blk_rq_nr_pieces(rq.nsect, ms)
    rq.parts = nparts
    rq.issued += nparts  # counted before any part becomes visible to the backend
    run.parts_out += nparts
    op = BLKIF_OP_WRITE if rq.write else BLKIF_OP_READ
    queued = 0
    for p in range(nparts):
        off, n = blk_rq_piece(rq.nsect, ms, p)
        rid = blkif_queue_rq(io.mq.hctx, io.mq.dispatch, fe.info, fe.rinfo, fe.shadow,
                             fe.grants, fe.gnt, fe.mem, r, op, rq.sector + off, n, cfg.buf_pfn,
                             tag)
        if rid >= 0:
            queued += 1
        elif rid != BLK_MQ_PARKED:
            run.err = ERR_QUEUE
    cost = nparts * P.fe_cs_ns + (P.sq_locked_ns if cfg.sq else 0.0)
    if queued:
        note_occupancy(tw, fe.rinfo, r)
        cost += flush(tw, io, P, r, t + ns(cost))
    return cost


@kernel(forceinline=True)
def blk_mq_end_request(tw, P, tag, t):
    """Every part of I/O ``tag`` has completed at ``t``: account it (``aio_complete``), free
    its blk-mq tag, give the job a credit."""
    run = tw.run[0]
    w0 = run.t_warm
    w1 = run.t_end
    rq = tw.ios[tag]
    st = rq.start
    run.completed += 1
    run.acc_area += clip(st, t, w0, w1)
    if t >= w0 and not run.draining:
        lat = t - st
        run.acc_done += 1.0
        run.acc_lat_sum += lat
        run.acc_bytes += rq.nsect * 512.0
        if rq.write:
            run.acc_writes += 1.0
        else:
            run.acc_reads += 1.0
        hist_record(run.hist, lat)
    rq.inuse = 0
    rq.next = run.io_free
    run.io_free = tag
    j = rq.job
    if tw.cfg[0].tag_depth > 0:
        blk_mq_put_tag(tw, P, tw.jobs[j].ring, t)
    if not tw.cfg[0].open:
        if P.think_ns > 0.0:
            z = rng_exponential(tw.streams[j], P.think_ns) if P.think_exp != 0 else P.think_ns
            push(tw.heap, tw.evl[0], t + ns(z), np.int64(EV_THINK), j)
        else:
            tw.jobs[j].credits += 1
            job_wake(tw, P, j, t)


@kernel(forceinline=True)
def job_step(tw, io, P, cpu, j, ph, t):
    """One step of fio job ``j`` on ``cpu`` (see the module docstring)."""
    c = tw.cpus[cpu]
    lk = 0 if tw.cfg[0].nflocks == 1 else tw.jobs[j].ring
    if ph == PH_START:
        extra = switch(tw, P, cpu, j, tw.jobs[j].slept, t)
        tw.jobs[j].slept = 0
        blk_mq_get_tag(tw, io, P, cpu, j, t, extra)
    elif ph == PH_LOCK:
        c.phase = PH_CRITICAL
        spin_lock(tw, P, lk, cpu, t)
    elif ph == PH_CRITICAL:
        lock_granted(tw, cpu, t)
        cost = blkif_queue_rq_locked(tw, io, P, j, tw.jobs[j].tag, t)
        c.phase = PH_RELEASE
        phase(tw, cpu, t + ns(cost), t)
    else:  # PH_RELEASE
        spin_unlock(tw, P, lk, cpu, t)
        if job_has_work(tw, j):
            if yield_or_continue(tw, P, cpu, np.int64(T_JOB), j, t):
                blk_mq_get_tag(tw, io, P, cpu, j, t, 0.0)
        else:
            tw.jobs[j].state = JOB_ASLEEP
            tw.jobs[j].slept = 1
            task_end(tw, P, cpu, t)
