"""The backend: blkback's per-ring thread, the device, and the device's completions on dom0.

``T_BE`` (ring ``r``'s ``xen_blkif_schedule`` thread) steps: ``PH_START``/``PH_BE_LOOP``
consume a batch (:func:`do_block_io_op_pass`: ``__do_block_io_op``, or
``do_block_io_op`` with its final check when nothing is left); ``PH_BE_BATCH`` takes the
optional device-wide backend lock once per request (``PH_BE_LOCKED``, ``PH_BE_HELD``), then
hands the requests to the device (:func:`submit_bio`) and loops; ``PH_BE_SLEEP`` sleeps until
the next upcall unless one came during the pass (``waiting_reqs``).

``T_DONE`` (a device completion, on the ring's dom0 vCPU): :func:`end_io`, blkback's
``__end_block_io_op`` (unmap, ``make_response``, notify the frontend).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blkback import (
    BS_MAP_OPS,
    BS_NOTIFY,
    BS_PERSISTENT_HITS,
    BS_REQUESTS,
    BS_UNMAP_OPS,
    __do_block_io_op,
    __end_block_io_op,
    blkback_pop_dispatched,
    do_block_io_op,
)
from xbq.engines.des.cpus import phase, switch, task_end, yield_or_continue
from xbq.engines.des.heap import LINE_DEV, push, push_line
from xbq.engines.des.locks import lock_granted, spin_lock, spin_unlock
from xbq.engines.des.state import (
    BE_ASLEEP,
    EV_BLKIF_INTERRUPT,
    EV_END_IO,
    NIL,
    PH_BE_BATCH,
    PH_BE_HELD,
    PH_BE_LOCKED,
    PH_BE_LOOP,
    PH_BE_SLEEP,
    PH_START,
    T_BE,
    TASK_SHIFT,
    clip,
    ns,
)
from xbq.workload.rng import rng_exponential


@kernel(forceinline=True)
def do_block_io_op_pass(tw, io, P, cpu, r, t, extra):
    """blkback's thread loop, one pass: consume what the ring holds, charge the batch.

    When nothing is left (``do_block_io_op``'s final check armed ``req_event``), the thread
    will sleep at the end of this step (``PH_BE_SLEEP``)."""
    be = io.be
    st = be.rings[r].stats
    n0 = st[BS_REQUESTS]
    m0 = st[BS_MAP_OPS]
    h0 = st[BS_PERSISTENT_HITS]
    tw.drings[r].be_again = 0  # ring->waiting_reqs = 0, before looking for work
    __do_block_io_op(be.blkif[0], be.rings[r], be.pending[r], be.pgnt[r], be.maptrack[r],
                     be.gnt, be.active, be.mem, be.evtchn, be.vbd[0], be.disk)
    if st[BS_REQUESTS] == n0:
        do_block_io_op(be.blkif, be.rings, be.pending, be.pgnt, be.maptrack, be.gnt,
                       be.active, be.mem, be.evtchn, be.vbd, be.disk, r)
    n = st[BS_REQUESTS] - n0
    c = tw.cpus[cpu]
    c.cur = (np.int64(T_BE) << TASK_SHIFT) | r
    if n == 0:
        c.phase = PH_BE_SLEEP
        phase(tw, cpu, t + ns(extra), t)
        return
    cost = extra + P.be_batch_ns + n * P.be_req_ns + (st[BS_MAP_OPS] - m0) * P.gnt_map_ns \
        + (st[BS_PERSISTENT_HITS] - h0) * P.pgnt_hit_ns
    c.phase = PH_BE_BATCH
    tw.drings[r].be_n = n  # requests of this batch still to take the shared backend lock
    phase(tw, cpu, t + ns(cost), t)


@kernel(forceinline=True)
def device_start(tw, P, code, nsect, t):
    """Hand one request to the device: null (fixed latency) or SSD (``channels`` servers,
    a FIFO of the requests waiting for one)."""
    cfg = tw.cfg[0]
    run = tw.run[0]
    w0 = run.t_warm
    w1 = run.t_end
    if not cfg.ssd:
        d = ns(P.null_ns)
        run.acc_dev_busy += clip(t, t + d, w0, w1)
        push_line(tw.heap, tw.evl[0], LINE_DEV, t + d, np.int64(EV_END_IO), code)
        return
    if run.dev_busy < cfg.channels:
        run.dev_busy += 1
        mean = P.ssd_base_ns + P.ssd_per_sector_ns * nsect
        streams = tw.streams
        d = rng_exponential(streams[streams.shape[0] - 1], mean) if P.ssd_exp != 0 else mean
        di = ns(d)
        run.acc_dev_busy += clip(t, t + di, w0, w1)
        push(tw.heap, tw.evl[0], t + di, np.int64(EV_END_IO), code)
    else:
        tw.slots[code].dq_next = NIL
        if run.dq_head == NIL:
            run.dq_head = code
        else:
            tw.slots[run.dq_tail].dq_next = code
        run.dq_tail = code


@kernel(forceinline=True)
def device_done(tw, io, P, t):
    """An SSD channel is free: start the next waiting request, if any."""
    run = tw.run[0]
    run.dev_busy -= 1
    c = run.dq_head
    if c != NIL:
        run.dq_head = tw.slots[c].dq_next
        if run.dq_head == NIL:
            run.dq_tail = NIL
        ents = tw.cfg[0].nr_ents
        device_start(tw, P, c, io.be.pending[c // ents, c % ents].nr_sects, t)


@kernel(forceinline=True)
def submit_bio(tw, io, P, r, t):
    """The requests blkback handed to the device this pass start there."""
    be = io.be
    ents = tw.cfg[0].nr_ents
    while True:
        p = blkback_pop_dispatched(be.rings[r], be.pending[r])
        if p < 0:
            break
        device_start(tw, P, r * ents + p, be.pending[r, p].nr_sects, t)


@kernel(forceinline=True)
def end_io(tw, io, P, cpu, code, t):
    """A device completion on dom0: ``__end_block_io_op`` (unmap, make_response, notify)."""
    be = io.be
    ents = tw.cfg[0].nr_ents
    r = code // ents
    p = code % ents
    fport = io.fe.rinfo[r].evtchn
    up0 = be.evtchn[fport].upcalls
    st = be.rings[r].stats
    u0 = st[BS_UNMAP_OPS]
    nt0 = st[BS_NOTIFY]
    __end_block_io_op(be.blkif[0], be.rings[r], be.pending[r], be.pgnt[r], be.maptrack[r],
                      be.gnt, be.active, be.mem, be.evtchn, be.vbd[0], be.disk, p)
    cost = P.be_done_ns + (st[BS_UNMAP_OPS] - u0) * P.gnt_unmap_ns
    if st[BS_NOTIFY] > nt0:
        cost += P.evtchn_send_ns
    if be.evtchn[fport].upcalls > up0:
        push(tw.heap, tw.evl[0], t + ns(cost + P.evtchn_latency_ns),
             np.int64(EV_BLKIF_INTERRUPT), r)
    tw.cpus[cpu].phase = 0
    phase(tw, cpu, t + ns(cost), t)


@kernel(forceinline=True)
def done_step(tw, io, P, cpu, code, ph, t):
    """A device completion's steps: ``__end_block_io_op``, then the CPU is free."""
    if ph == PH_START:
        end_io(tw, io, P, cpu, code, t)
    else:
        task_end(tw, P, cpu, t)


@kernel(forceinline=True)
def be_step(tw, io, P, cpu, r, ph, t):
    """One step of ring ``r``'s blkback thread (see the module docstring)."""
    c = tw.cpus[cpu]
    d = tw.drings[r]
    belock = tw.cfg[0].belock + (r if P.be_pools_per_ring != 0 else 0)
    if ph == PH_START or ph == PH_BE_LOOP:  # (re)start the loop: consume a batch
        extra = 0.0
        if ph == PH_START:
            extra = switch(tw, P, cpu, tw.cfg[0].jobs + r, d.be_slept, t)
            d.be_slept = 0
        do_block_io_op_pass(tw, io, P, cpu, r, t, extra)
        return
    if ph == PH_BE_SLEEP:  # nothing left: sleep until the next upcall ...
        if d.be_again:  # ... unless one came since the pass began (waiting_reqs)
            c.phase = PH_BE_LOOP
            phase(tw, cpu, t, t)
            return
        d.be_state = BE_ASLEEP
        d.be_slept = 1
        d.be_sleep_since = t
        task_end(tw, P, cpu, t)
        return
    if ph == PH_BE_BATCH and belock >= 0 and P.be_shared_lock_ns > 0.0:
        c.phase = PH_BE_LOCKED
        spin_lock(tw, P, belock, cpu, t)
        return
    if ph == PH_BE_LOCKED:
        lock_granted(tw, cpu, t)
        c.phase = PH_BE_HELD
        phase(tw, cpu, t + ns(P.be_shared_lock_ns), t)
        return
    if ph == PH_BE_HELD:  # one request's persistent-grant lookups done: release, next request
        spin_unlock(tw, P, belock, cpu, t)
        d.be_n -= 1
        if d.be_n > 0:
            c.phase = PH_BE_LOCKED
            spin_lock(tw, P, belock, cpu, t)
            return
    submit_bio(tw, io, P, r, t)
    if yield_or_continue(tw, P, cpu, np.int64(T_BE), r, t):
        c.phase = PH_BE_LOOP
        phase(tw, cpu, t, t)
