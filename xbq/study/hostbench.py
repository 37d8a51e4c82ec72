"""The kernels of :mod:`xbq.study.hostcosts`: the native engine's own steps, timed one by one.

Kept apart from the Python API so that editing the API does not invalidate their cached
compilation (the JIT cache of a module is keyed by its source and its imports). Every
kernel here only borrows arrays (``xbq._jit.kernel``: ``nogil``, no reference counting);
the caller allocates every output. Times are raw: ``cpu_cycles`` ticks (the TSC on x86) for
the single-thread pipeline, which the caller converts with two :func:`clock_pair` readings,
and ``monotonic_ns`` nanoseconds wherever two threads compare stamps (``CLOCK_MONOTONIC`` is
one clock for every CPU).

* :func:`pipeline` runs the native engine's submit, backend, interrupt and completion steps
  (:mod:`xbq.engines.native.loops`, :mod:`xbq.blkif`) in one thread on a real connected
  ring, batch after batch, and times each step of each batch;
* :func:`lock_loop` and :func:`evtchn_loop` time tight loops of one operation;
* :func:`lock_pingpong`, :func:`evtchn_pingpong`, :func:`wake_pingpong` and
  :func:`futex_pingpong` each run on two OS threads (one call per thread, ``me`` 0 or 1)
  and time how long one thread takes to see what the other did.

Shared control words (``ctl``, int64, one cache line apart): :data:`C_START` (threads
arrived), :data:`C_ABORT` (set by a thread that waited past its deadline), :data:`C_DONE`
``+ 8 * me`` (thread ``me`` finished), :data:`C_READY`, :data:`C_ACK` and :data:`C_GO` (the
wake-up hand-shake; :data:`C_READY` is also the futex ping-pong's turn), :data:`C_STAMP` (a
stamp one thread leaves for the other).
"""

from __future__ import annotations

from xbq._jit import kernel
from xbq.blkif.blk_mq import (
    blk_rq_nr_pieces,
    blk_rq_piece,
    blkif_queue_rq,
    kick_pending_request_queues,
)
from xbq.blkif.blkback import (
    BS_REQUESTS,
    blkback_pop_dispatched,
    complete_io,
    do_block_io_op,
)
from xbq.blkif.blkfront import blkif_interrupt, flush_requests
from xbq.engines.native import loops as K
from xbq.engines.native.locks import (
    LK_OWNER,
    LK_WORD,
    LOCK_MCS,
    LOCK_WORDS,
    MCS_NEXT,
    MCS_WORDS,
    spin_lock,
    spin_unlock,
)
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE
from xbq.xen.atomic import (
    add_i64_at,
    atomic_fetch_add,
    atomic_load,
    atomic_store,
    cpu_cycles,
    cpu_relax,
    futex_wait,
    futex_wake,
    load_i64_at,
    monotonic_ns,
    sched_yield,
    store_i64_at,
)
from xbq.xen.evtchn import evtchn_test_and_clear_pending, notify_remote_via_evtchn

# --- the pipeline's record of one batch (int64 words) -------------------------------------------
#: Per batch: cycles of each step, then what the batch held.
(S_EMPTY, S_OUTSIDE, S_SUBMIT, S_BACKEND, S_BE_DONE, S_IRQ, S_COMPLETE,
 N_IOS, N_PIECES, N_CONSUMED, N_RESPONSES, N_DEFERRED) = range(12)
REC_WORDS = 12
#: Step names, in the order of the words above.
STEPS = ("empty", "outside", "submit", "backend", "be_done", "irq", "complete")

#: Pipeline error codes (negative returns).
E_SLOT, E_TAGS, E_LOCK, E_QUEUE, E_BACKEND, E_IRQ, E_COMPLETE = range(-1, -8, -1)

# --- shared control words of the two-thread kernels ----------------------------------------------
C_START = 0
C_ABORT = 8
C_DONE = 16  # + 8 * me
C_READY = 32
C_ACK = 40
C_STAMP = 48
C_GO = 56
CTL_WORDS = 64
#: Pause-spins before a waiting thread starts yielding its CPU.
SPINS_BEFORE_YIELD = 1000


@kernel
def clock_pair():
    """``(monotonic ns, cpu_cycles)`` read together; two of them give the cycles' rate."""
    return monotonic_ns(), cpu_cycles()


@kernel
def _batch(fe, be, mq, nt, wl, n, locked, rec):
    """One batch of ``n`` I/Os of job 0 on ring 0 through every step; fill ``rec``."""
    par = nt.par[0]
    slots, mem, c = nt.slots, fe.mem, nt.cnt[0]
    job = nt.jobs[0]
    maxs, maxp = par.max_sectors, par.max_pieces
    t0 = cpu_cycles()
    t1 = cpu_cycles()
    # the job's work outside any lock (run_job): reap, draw, take blk-mq's tags
    for k in range(n):
        state = load_i64_at(slots, k, K.SLOT_OFF_STATE)
        if state == 0:
            if not K._reap(0, k, job.seq, mem, nt.ctl, par, slots, nt.wseq):
                return E_SLOT
        elif state != K.SLOT_FREE:
            return E_SLOT
        K._draw_io(0, k, job, mem, par, slots, wl)
        pieces = blk_rq_nr_pieces(slots[k].nsect, maxs)
        if not K._get_tags(nt, 0, pieces):
            return E_TAGS
        store_i64_at(slots, k, K.SLOT_OFF_STATE, pieces)
    t2 = cpu_cycles()
    # blkif_queue_rq and flush_requests for each driver request (submit_io), under the
    # ring lock when ``locked``
    npieces = 0
    for k in range(n):
        s = slots[k]
        op = BLKIF_OP_WRITE if s.write else BLKIF_OP_READ
        for p in range(blk_rq_nr_pieces(s.nsect, maxs)):
            off, m = blk_rq_piece(s.nsect, maxs, p)
            tag = k * maxp + p
            add_i64_at(nt.tags, tag, K.TAG_OFF_ISSUED, 1)
            held = 0
            if locked:
                held = K._ring_lock(nt, 0, 0, c)
                if held < 0:
                    return E_LOCK
            rid = blkif_queue_rq(mq.hctx, mq.dispatch, fe.info, fe.rinfo, fe.shadow,
                                 fe.grants, fe.gnt, mem, 0, op, s.sector + off, m,
                                 s.buf + off // 8, tag)
            if rid >= 0:
                flush_requests(fe.rinfo, mem, fe.evtchn, 0)
            if locked and K._ring_unlock(nt, 0, 0, c, held) != 0:
                return E_LOCK
            if rid < 0:
                return E_QUEUE
            npieces += 1
    t3 = cpu_cycles()
    evtchn_test_and_clear_pending(be.evtchn, be.rings[0].evtchn)
    before = be.rings[0].stats[BS_REQUESTS]
    t4 = cpu_cycles()
    if do_block_io_op(be.blkif, be.rings, be.pending, be.pgnt, be.maptrack, be.gnt,
                      be.active, be.mem, be.evtchn, be.vbd, be.disk, 0) != 0:
        return E_BACKEND
    t5 = cpu_cycles()
    deferred = 0
    while True:  # a deferred device's completions (__end_block_io_op, make_response)
        pr = blkback_pop_dispatched(be.rings[0], be.pending[0])
        if pr < 0:
            break
        complete_io(be.blkif, be.rings, be.pending, be.pgnt, be.maptrack, be.gnt, be.active,
                    be.mem, be.evtchn, be.vbd, be.disk, 0, pr)
        deferred += 1
    t6 = cpu_cycles()
    consumed = be.rings[0].stats[BS_REQUESTS] - before
    evtchn_test_and_clear_pending(fe.evtchn, fe.rinfo[0].evtchn)
    t7 = cpu_cycles()
    got = blkif_interrupt(fe.info, fe.rinfo, fe.shadow, fe.grants, fe.gnt, mem, 0, nt.done[0])
    if got >= 0 and kick_pending_request_queues(mq.hctx, mq.dispatch, fe.info, fe.rinfo,
                                                fe.shadow, fe.grants, fe.gnt, mem, 0) > 0:
        flush_requests(fe.rinfo, mem, fe.evtchn, 0)
    t8 = cpu_cycles()
    if got != npieces:
        return E_IRQ
    if K._complete(nt, 0, 0, got, K.PHASE_MEASURE) != got:
        return E_COMPLETE
    t9 = cpu_cycles()
    rec[S_EMPTY] = t1 - t0
    rec[S_OUTSIDE] = t2 - t1
    rec[S_SUBMIT] = t3 - t2
    rec[S_BACKEND] = t5 - t4
    rec[S_BE_DONE] = t6 - t5
    rec[S_IRQ] = t8 - t7
    rec[S_COMPLETE] = t9 - t8
    rec[N_IOS] = n
    rec[N_PIECES] = npieces
    rec[N_CONSUMED] = consumed
    rec[N_RESPONSES] = got
    rec[N_DEFERRED] = deferred
    return 0


@kernel
def pipeline(fe, be, mq, nt, wl, batches, variants, warm, out):
    """Run ``warm`` untimed sweeps, then ``out.shape[0]`` timed ones.

    A sweep runs, for each batch size of ``batches`` and each variant ``(locked, defer)`` of
    ``variants`` (int64 ``[nv, 2]``), one batch (:func:`_batch`): with ``defer`` blkback
    hands its dispatched requests to a deferred device, which completes them in a step of
    its own (``be_done``), else the null device completes them inside ``do_block_io_op``.
    Fills ``out[sweep, batch, variant, :REC_WORDS]``; returns 0 or an ``E_*`` code.
    """
    nv = variants.shape[0]
    for sweep in range(warm + out.shape[0]):
        for b in range(batches.size):
            for v in range(nv):
                be.blkif[0].defer = variants[v, 1]
                rec = out[max(sweep - warm, 0), b, v]
                rc = _batch(fe, be, mq, nt, wl, batches[b], variants[v, 0] != 0, rec)
                if rc != 0:
                    be.blkif[0].defer = 0
                    return rc
    be.blkif[0].defer = 0
    return 0


@kernel
def clock_gaps(out):
    """``out[i]``: ns between two back-to-back ``monotonic_ns`` reads (what one read adds to
    an interval it stamps)."""
    for i in range(out.size):
        t0 = monotonic_ns()
        out[i] = monotonic_ns() - t0
    return 0


@kernel
def lock_loop(lk, nodes, kind, ops, out):
    """Time ``ops`` uncontended acquire/release pairs of lock 0 (``spin_lock`` /
    ``spin_unlock`` of kind ``kind``) per entry of ``out`` (cycles); returns 0 or -1."""
    for r in range(out.size):
        t0 = cpu_cycles()
        for _ in range(ops):
            if spin_lock(lk, 0, kind, nodes, 0, 1_000_000_000) != 0:
                return -1
            if spin_unlock(lk, 0, kind, nodes, 0, 1_000_000_000) != 0:
                return -1
        out[r] = cpu_cycles() - t0
    return 0


@kernel
def evtchn_loop(ev, port, peer, ops, out):
    """Per repetition ``r``: ``out[r, 0]``, the cycles of ``ops`` test-and-clears of
    ``peer`` (an upcall's look at its channel); ``out[r, 1]``, of ``ops`` sends from
    ``port`` (``notify_remote_via_evtchn``, which sets ``peer`` pending) each followed by the
    test-and-clear."""
    for r in range(out.shape[0]):
        t0 = cpu_cycles()
        for _ in range(ops):
            evtchn_test_and_clear_pending(ev, peer)
        t1 = cpu_cycles()
        for _ in range(ops):
            notify_remote_via_evtchn(ev, port)
            evtchn_test_and_clear_pending(ev, peer)
        out[r, 0] = t1 - t0
        out[r, 1] = cpu_cycles() - t1
    return 0


# --- two threads ----------------------------------------------------------------------------


@kernel
def _wait_step(ctl, k, deadline):
    """One step of a bounded wait: pause, or yield; False once past ``deadline`` or after the
    other thread gave up (the run is then aborted)."""
    if k < SPINS_BEFORE_YIELD:
        cpu_relax()
    else:
        sched_yield()
        if atomic_load(ctl, C_ABORT) != 0:
            return False
        if monotonic_ns() > deadline:
            atomic_store(ctl, C_ABORT, 1)
            return False
    return True


@kernel
def _arrive(ctl, deadline):
    """Wait until both threads have arrived; False on a timeout."""
    atomic_fetch_add(ctl, C_START, 1)
    k = 0
    while atomic_load(ctl, C_START) < 2:
        if not _wait_step(ctl, k, deadline):
            return False
        k += 1
    return True


@kernel
def _other_queued(lk, nodes, kind, me):
    """Whether the other thread now waits for lock 0 (the holder is ``me``)."""
    if kind == LOCK_MCS:
        return atomic_load(nodes, me * MCS_WORDS + MCS_NEXT) != 0
    return atomic_load(lk, LK_WORD) - atomic_load(lk, LK_OWNER) >= 2


@kernel
def lock_pingpong(me, lk, nodes, kind, ctl, n, deadline, samples):
    """Thread ``me`` of two taking lock 0 in turn, ``n`` times each: the holder waits until
    the other waits for the lock, leaves a stamp and releases; the new holder records the
    time since the stamp (``monotonic_ns``): the hand-off to one waiter.

    Returns the samples written to ``samples`` (ns), or -1 on a timeout or a lock error.
    """
    if not _arrive(ctl, deadline):
        return -1
    other = 1 - me
    got = 0
    for _ in range(n):
        if spin_lock(lk, 0, kind, nodes, me, 5_000_000_000) != 0:
            atomic_store(ctl, C_ABORT, 1)
            return -1
        now = monotonic_ns()
        stamp = atomic_load(ctl, C_STAMP)
        if stamp > 0:
            samples[got] = now - stamp
            got += 1
        k = 0
        queued = False
        while True:
            if _other_queued(lk, nodes, kind, me):
                queued = True
                break
            if atomic_load(ctl, C_DONE + 8 * other) != 0:
                break
            if not _wait_step(ctl, k, deadline):
                spin_unlock(lk, 0, kind, nodes, me, 5_000_000_000)
                return -1
            k += 1
        atomic_store(ctl, C_STAMP, monotonic_ns() if queued else 0)
        if spin_unlock(lk, 0, kind, nodes, me, 5_000_000_000) != 0:
            atomic_store(ctl, C_ABORT, 1)
            return -1
    atomic_store(ctl, C_DONE + 8 * me, 1)
    return got


@kernel
def evtchn_pingpong(me, ev, port0, port1, ctl, n, deadline, samples):
    """Two threads bounce an event: thread 0 sends from ``port0`` (its peer ``port1``
    becomes pending); thread 1, spinning on ``evtchn_test_and_clear_pending(port1)``, sees
    it and sends back from ``port1``; thread 0, spinning on ``port0``, sees the reply and
    records the round trip (``samples``, ns). Returns n, or -1 on a timeout."""
    if not _arrive(ctl, deadline):
        return -1
    mine = port0 if me == 0 else port1
    for i in range(n):
        t0 = monotonic_ns()
        if me == 0:
            notify_remote_via_evtchn(ev, mine)
        k = 0
        while not evtchn_test_and_clear_pending(ev, mine):
            if not _wait_step(ctl, k, deadline):
                return -1
            k += 1
        if me == 1:
            notify_remote_via_evtchn(ev, mine)
        else:
            samples[i] = monotonic_ns() - t0
    return n


@kernel
def wake_pingpong(me, nt, ctl, n, delay_ns, deadline, samples, kick_ns):
    """Thread 1 halts as an idle native vCPU does (``_halt_begin``, ``_halt_sleep``: a futex
    wait); thread 0 waits ``delay_ns`` after it halted, stamps, and kicks it (``vcpu_kick``:
    ``futex_wake``). Thread 1 records the time from the stamp to running again (``samples``,
    ns; -1 where no kick woke it), thread 0 the time its kick took (``kick_ns``, -1 where
    there was no halt left to kick). Thread 1 is native vCPU thread 1, thread 0 vCPU thread
    0 of ``nt``; the two go in lockstep (``C_READY``, ``C_ACK``, ``C_GO``). Returns n, or
    -1 on a timeout."""
    if not _arrive(ctl, deadline):
        return -1
    c = nt.cnt[1]
    for i in range(n):
        if me == 1:
            k = 0
            while atomic_load(ctl, C_GO) != i:  # thread 0 is done with the last one
                if not _wait_step(ctl, k, deadline):
                    return -1
                k += 1
            wake = K._halt_begin(nt, 1)
            atomic_store(ctl, C_READY, i + 1)
            K._halt_sleep(nt, 1, wake, c)
            t1 = monotonic_ns()
            stamp = atomic_load(ctl, C_STAMP)
            samples[i] = t1 - stamp if stamp > 0 else -1
            atomic_store(ctl, C_ACK, i + 1)
        else:
            k = 0
            while atomic_load(ctl, C_READY) != i + 1:
                if not _wait_step(ctl, k, deadline):
                    return -1
                k += 1
            t = monotonic_ns() + delay_ns
            while monotonic_ns() < t:
                cpu_relax()
            t0 = monotonic_ns()
            atomic_store(ctl, C_STAMP, t0)
            kicked = K.vcpu_kick(nt, 1, 0)
            kick_ns[i] = monotonic_ns() - t0 if kicked else -1
            k = 0
            while atomic_load(ctl, C_ACK) != i + 1:
                if not _wait_step(ctl, k, deadline):
                    return -1
                k += 1
            atomic_store(ctl, C_STAMP, 0)
            atomic_store(ctl, C_GO, i + 1)
    return n


@kernel
def futex_pingpong(me, ctl, n, chunk, deadline, out):
    """Two threads pass a turn word back and forth, each sleeping on it (``futex_wait``)
    until the other hands it over (store, ``futex_wake``): on one CPU every hand-over is a
    context switch. Thread 0 records the ns of every ``chunk`` round trips in ``out``.
    Returns n, or -1 on a timeout."""
    if not _arrive(ctl, deadline):
        return -1
    turn = C_READY
    t0 = monotonic_ns()
    for i in range(n):
        while atomic_load(ctl, turn) != me:
            futex_wait(ctl, turn, 1 - me, 1_000_000)
            if atomic_load(ctl, C_ABORT) != 0:
                return -1
            if monotonic_ns() > deadline:
                atomic_store(ctl, C_ABORT, 1)
                futex_wake(ctl, turn, 1)
                return -1
        atomic_store(ctl, turn, 1 - me)
        futex_wake(ctl, turn, 1)
        if me == 0 and (i + 1) % chunk == 0:
            t1 = monotonic_ns()
            out[i // chunk] = t1 - t0
            t0 = t1
    return n




@kernel
def poll_loop(words, spin, out):
    """Time ``spin`` idle iterations of a native vCPU's loop (a look at each of ``words``,
    its jobs' and rings' state, then ``cpu_relax``) per entry of ``out`` (cycles): the poll
    before it halts. Returns the sum of what it read (so nothing is optimised away)."""
    seen = 0
    for r in range(out.size):
        t0 = cpu_cycles()
        for _ in range(spin):
            for k in range(words.size):
                seen += atomic_load(words, k)
            cpu_relax()
        out[r] = cpu_cycles() - t0
    return seen


__all__ = ["pipeline", "lock_loop", "evtchn_loop", "lock_pingpong", "evtchn_pingpong",
           "wake_pingpong", "futex_pingpong", "poll_loop", "clock_pair",
           "clock_gaps", "STEPS", "REC_WORDS", "CTL_WORDS", "LOCK_WORDS"]
