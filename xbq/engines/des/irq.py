"""The guest interrupt task: ring ``r``'s upcall on the vCPU its event channel is bound to.

Steps (``PH_*`` of :mod:`xbq.engines.des.state`): ``PH_START`` clears the channel and
charges the upcall's entry (``irq_entry_ns``); ``PH_LOCK`` takes the lock; ``PH_CRITICAL``
holds it: ``blkif_interrupt`` consumes the responses, ``kick_pending_request_queues``
restarts the stopped queue (:func:`blkif_interrupt_locked`); ``PH_RELEASE`` releases it;
``PH_COMPLETE`` completes the I/Os after the lock, as ``blk_mq_complete_request`` does
(:func:`blkif_complete`), and runs again if another event came meanwhile.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blk_mq import kick_pending_request_queues
from xbq.blkif.blkfront import blkif_interrupt
from xbq.engines.des.cpus import phase, rq_push, task_end
from xbq.engines.des.jobs import blk_mq_end_request, flush, note_occupancy
from xbq.engines.des.locks import lock_granted, spin_lock, spin_unlock
from xbq.engines.des.state import (
    ERR_DUPLICATE,
    ERR_PROTOCOL,
    ERR_QUEUE,
    INJECT_DROP,
    INJECT_NONE,
    IRQ_IDLE,
    IRQ_QUEUED,
    IRQ_RUNNING,
    PH_COMPLETE,
    PH_CRITICAL,
    PH_LOCK,
    PH_RELEASE,
    PH_START,
    T_IRQ,
    TASK_SHIFT,
    ns,
)
from xbq.xen.evtchn import evtchn_test_and_clear_pending


@kernel(forceinline=True)
def blkif_interrupt_locked(tw, io, P, r, t):
    """Ring ``r``'s handler holds the lock: ``blkif_interrupt``, then restart the queue
    (``kick_pending_request_queues``); return the cost."""
    fe = io.fe
    run = tw.run[0]
    n = blkif_interrupt(fe.info, fe.rinfo, fe.shadow, fe.grants, fe.gnt, fe.mem, r,
                        tw.done[r])
    if n < 0:
        run.err = ERR_PROTOCOL
        n = 0
    tw.drings[r].irq_ndone = n
    queued = kick_pending_request_queues(io.mq.hctx, io.mq.dispatch, fe.info, fe.rinfo,
                                         fe.shadow, fe.grants, fe.gnt, fe.mem, r)
    if queued < 0:
        run.err = ERR_QUEUE
        queued = 0
    cost = P.irq_base_ns + n * P.irq_per_rsp_ns + queued * P.fe_cs_ns
    if queued:
        note_occupancy(tw, fe.rinfo, r)
        cost += flush(tw, io, P, r, t + ns(cost))
    return cost


@kernel(forceinline=True)
def blkif_complete(tw, P, cpu, r, t):
    """After the lock: complete the I/Os the interrupt consumed, then end the task (or run
    again if another event came while it ran)."""
    cfg = tw.cfg[0]
    run = tw.run[0]
    d = tw.drings[r]
    done = tw.done[r]
    for k in range(d.irq_ndone):
        tag = done[k].tag
        run.parts_done += 1
        times = 1
        if cfg.inject != INJECT_NONE and run.parts_done == cfg.inject_at:
            times = 0 if cfg.inject == INJECT_DROP else 2  # the test hook
        rq = tw.ios[tag]
        for _ in range(times):
            if rq.completed >= rq.issued:  # more completions than issues
                run.dup += 1
                run.err_tag = tag
                run.err = ERR_DUPLICATE
                break
            rq.completed += 1
            run.parts_out -= 1
            rq.parts -= 1
            if rq.parts == 0:
                blk_mq_end_request(tw, P, tag, t)
    d.irq_ndone = 0
    if d.irq_again:
        d.irq_state = IRQ_QUEUED
        rq_push(tw, cpu, True, (np.int64(T_IRQ) << TASK_SHIFT) | r, False)
    else:
        d.irq_state = IRQ_IDLE
    task_end(tw, P, cpu, t)


@kernel(forceinline=True)
def irq_step(tw, io, P, cpu, r, ph, t):
    """One step of ring ``r``'s interrupt on ``cpu`` (see the module docstring)."""
    c = tw.cpus[cpu]
    lk = 0 if tw.cfg[0].nflocks == 1 else r
    if ph == PH_START:
        evtchn_test_and_clear_pending(io.fe.evtchn, io.fe.rinfo[r].evtchn)
        tw.drings[r].irq_state = IRQ_RUNNING
        tw.drings[r].irq_again = 0
        c.phase = PH_LOCK
        phase(tw, cpu, t + ns(P.irq_entry_ns), t)
    elif ph == PH_LOCK:
        c.phase = PH_CRITICAL
        spin_lock(tw, P, lk, cpu, t)
    elif ph == PH_CRITICAL:
        lock_granted(tw, cpu, t)
        cost = blkif_interrupt_locked(tw, io, P, r, t)
        c.phase = PH_RELEASE
        phase(tw, cpu, t + ns(cost), t)
    elif ph == PH_RELEASE:
        spin_unlock(tw, P, lk, cpu, t)
        c.phase = PH_COMPLETE
        phase(tw, cpu, t + ns(tw.drings[r].irq_ndone * P.complete_ns), t)
    else:  # PH_COMPLETE
        blkif_complete(tw, P, cpu, r, t)
