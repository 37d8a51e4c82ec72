"""The native engine's thread loops: fio-like jobs (blkfront side) and ``xen_blkif_schedule``.

Every loop here is a ``nogil`` kernel (:func:`xbq._jit.kernel`) and runs on its own OS thread.
They share the blkfront state (:class:`xbq.blkfront.blkfront_info`), the blkback state
(:class:`xbq.blkback.xen_blkif`) and a :class:`native_run` of engine arrays. Nothing takes a
Python lock; the only synchronisation is the protocol's own (ring indices with their barriers,
event-channel pending bits) and the frontend lock of the mode being measured.

Job ``j`` (:func:`job_loop`) runs on guest vCPU ``job_vcpu[j]`` and submits on ring
``job_ring[j]`` (blk-mq's queue for that vCPU; ring 0 in ``sq`` mode). Each submission is
``blkif_queue_rq``: take the ring's lock (``io_lock`` in sq, ``ring_lock`` in mq),
``blkif_queue_request``, ``flush_requests`` (one push and notify check per request, as blk-mq
blkfront does), release. A full ring stops the job's queue until the ring has room again
(blk-mq's ``blk_mq_stop_hw_queue`` / restart from the interrupt handler).

Completion: each ring's event channel is bound to one vCPU (``irq_vcpu``). A job on that vCPU
plays the interrupt: whenever it finds the channel pending it runs ``blkif_interrupt`` under
the same lock as the submit path, then completes the requests it returned (which may belong
to any job on the ring) outside the lock, as ``blk_mq_complete_request`` does.

The backend (:func:`backend_loop`) is one thread per ring running ``xen_blkif_schedule``: wait
for the ring's event (``waiting_reqs``: a bounded spin, then ``sched_yield``), clear it, run
``do_block_io_op`` (the device completes inline and ``make_response`` pushes and notifies),
and set it again when ``do_block_io_op`` reports more work.

Accounting: each driver request carries a tag ``(job * iodepth + slot) * max_pieces + piece``.
``issued[tag]`` is counted before the request becomes visible, ``completed[tag]`` when its
response is handled; a completion beyond the issues is a duplicate and stops the run. With the
ramdisk every write carries the pattern :func:`pattern_word` of its (job, sector), and every
read is checked against it (a sector may read as zeros only if no write to it had completed
before the read was submitted).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from xbq._jit import kernel
from xbq.abi import BLKIF_OP_READ, BLKIF_OP_WRITE
from xbq.atomic import (
    atomic_cas,
    atomic_fetch_add,
    atomic_load,
    atomic_store,
    cpu_relax,
    monotonic_ns,
    sched_yield,
)
from xbq.blkback import BS_REQUESTS, EACCES, do_block_io_op
from xbq.blkfront import BLKIF_QUEUE_BUSY, blkif_interrupt, blkif_queue_request, flush_requests
from xbq.evtchn import evtchn_test_and_clear_pending
from xbq.hist import hist_record
from xbq.locks import spin_lock, spin_unlock
from xbq.workload import next_io

# --- control words (int64[64]; the hot ones on their own cache lines) ------------------------
C_PHASE = 0
C_ABORT = 8  # first abort reason (AB_*), 0 while running
C_ABORT_WHO = 9  # thread index that stopped the run
C_ABORT_ARG = 10  # ring, tag or sector, by reason
C_ABORT_ARG2 = 11
C_DUPS = 16  # duplicate completions seen
C_SEEN = 24  # driver-request completions handled (for the injection test hook)
N_CTL = 64

PHASE_WARMUP = 0
PHASE_MEASURE = 1
PHASE_DRAIN = 2  # jobs stop starting I/Os and finish the ones in flight
PHASE_EXIT = 3  # backends stop

AB_WATCHDOG = 1
AB_LOCK = 2  # a lock wait timed out (or the lock was broken by one that did)
AB_PROTOCOL = 3  # blkif_interrupt found a protocol error
AB_STATUS = 4  # a response with a status other than BLKIF_RSP_OKAY
AB_DUPLICATE = 5
AB_BAD_TAG = 6
AB_QUEUE = 7  # blkif_queue_request refused a request (invalid or disconnected)
AB_HALTED = 8  # blkback halted the ring (bogus producer index)
AB_DATA = 9  # ramdisk data read back differs from what was written
AB_PYTHON = 10  # a thread raised (set from Python)
AB_NAMES = {AB_WATCHDOG: "watchdog", AB_LOCK: "lock timeout", AB_PROTOCOL: "protocol error",
            AB_STATUS: "error response", AB_DUPLICATE: "duplicate completion",
            AB_BAD_TAG: "unknown tag", AB_QUEUE: "request refused", AB_HALTED: "ring halted",
            AB_DATA: "data mismatch", AB_PYTHON: "thread exception"}

# --- parameters (int64 vector) ----------------------------------------------------------------
# NP_INJECT / NP_INJECT_AT: a test hook that drops (1) or duplicates (2) the completion of
# the NP_INJECT_AT-th driver request the interrupt handlers see.
(NP_JOBS, NP_RINGS, NP_IODEPTH, NP_MAX_SECTORS, NP_MAX_PIECES, NP_LOCK, NP_TIMEOUT_NS,
 NP_DATA, NP_REGION, NP_SPIN, NP_STALL_RING, NP_STALL_AFTER, NP_INJECT, NP_INJECT_AT) = range(14)
N_NP = 14
INJECT_DROP, INJECT_DUPLICATE = 1, 2

# --- per-thread counters (int64[nr_threads, CNT_WORDS]; a cache line per thread) ------------
# (no separate I/O count: I/Os = reads + writes, so the window's two snapshots, each copied
# while the threads run, can never disagree on iops vs read_iops + write_iops)
CNT_READS, CNT_WRITES, CNT_BYTES, CNT_IRQS, CNT_PROGRESS = range(5)
CNT_WORDS = 8

SLOT_FREE = -1  # slot_state: -1 free, 0 completed (to reap), n > 0: pieces outstanding
WSEQ_NEVER = np.iinfo(np.int64).max
#: What a read buffer holds until the read's data is copied in (never a pattern, never 0).
READ_POISON = 0x5EADBEEF5EADBEEF

native_run = namedtuple("native_run", [
    "ctl", "params", "job_ring", "job_vcpu", "irq_vcpu", "locks", "mcs_nodes", "cnt", "hist",
    "streams", "slot_state", "slot_t0", "slot_write", "slot_sector", "slot_nsect", "slot_seq",
    "slot_buf", "issued", "completed", "done_tag", "done_status", "job_done", "wseq",
])
native_run.__doc__ = """The engine's shared arrays (J jobs, D iodepth, R rings, T = J + R threads).

ctl : int64[N_CTL]             phase, abort reason and its details (C_*)
params : int64[N_NP]           NP_*
job_ring, job_vcpu : int64[J]  ring each job submits on; the vCPU it runs on
irq_vcpu : int64[R]            the vCPU each ring's event channel is bound to
locks : int64[R * LOCK_WORDS]  the frontend locks (lock r guards ring r; sq: one io_lock)
mcs_nodes : int64[J * MCS_WORDS]
cnt : int64[T, CNT_WORDS]      per-thread counters (CNT_*)
hist : int64[J, NR_BUCKETS]    completion latencies (ns) recorded by each interrupt handler
streams : uint64[J, 4]         each job's random stream
slot_* : [J * D]               each in-flight I/O: state, submit time (ns), write?, first sector,
                               sectors, job sequence number, first guest page of its buffer
issued, completed : int64[J * D * max_pieces]   per tag
done_tag, done_status : int64[J, nr_ents]        blkif_interrupt's output, per handler
job_done : int64[J * 8]        set when a draining job has nothing left in flight
wseq : int64[sectors]          ramdisk check: job sequence at which a write to the sector was
                               first seen complete (WSEQ_NEVER: never)
"""


@kernel
def pattern_word(job, sector, k):
    """Word ``k`` (0..63) of sector ``sector`` as job ``job`` writes it: never zero (int64)."""
    return (np.int64(job + 1) << 56) | (np.int64(sector) << 8) | np.int64(k)


@kernel
def _abort(nr, reason, who, arg, arg2):
    """Record the first reason to stop the run; every loop sees ``C_ABORT`` and returns."""
    if atomic_cas(nr.ctl, C_ABORT, 0, reason) == 0:
        atomic_store(nr.ctl, C_ABORT_WHO, who)
        atomic_store(nr.ctl, C_ABORT_ARG, arg)
        atomic_store(nr.ctl, C_ABORT_ARG2, arg2)
    return -1


#: Yields of an idle thread before it starts sleeping (a few ms of yielding).
IDLE_YIELDS = 1000
#: Sleep of a long-idle thread (us): the kthread asleep on its waitqueue, a vCPU halted.
IDLE_SLEEP_US = 50


@intrinsic
def usleep(typingctx, us):
    """libc ``usleep(us)``: sleep this thread for ``us`` microseconds (declared by name)."""
    sig = types.int32(us)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32]),
                                            "usleep")
        return builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.int32)])

    return sig, codegen


@kernel(inline="always")
def _idle(k, spin):
    """Bounded wait step ``k``: pause ``spin`` times, yield ``IDLE_YIELDS`` times, then sleep.

    A user-space thread cannot block on the event channel the way ``xenblkd`` sleeps on its
    waitqueue; the sleep stage stands in for it, so idle rings and idle jobs leave the CPUs to
    the busy ones (it matters with more threads than cores).
    """
    if k < spin:
        cpu_relax()
    elif k < spin + IDLE_YIELDS:
        sched_yield()
    else:
        usleep(IDLE_SLEEP_US)


@kernel(inline="always")
def _ring_has_room(fi, r):
    """A lock-free peek at ``RING_FULL``: may a stopped queue try again?"""
    p = fi.front_pvt[r]
    used = (np.int64(p.req_prod_pvt) - np.int64(p.rsp_cons)) & 0xFFFFFFFF
    return used < np.int64(p.nr_ents)


# --- the interrupt handler ------------------------------------------------------------------


@kernel
def handle_irq(j, q, fi, nr, phase):
    """blkfront's ``blkif_interrupt`` for ring ``q``, run by job ``j``, then the completions.

    Returns the responses handled, or -1 after recording an abort reason.
    """
    P = nr.params
    kind, tmo = P[NP_LOCK], P[NP_TIMEOUT_NS]
    if spin_lock(nr.locks, q, kind, nr.mcs_nodes, j, tmo) != 0:
        return _abort(nr, AB_LOCK, j, q, 0)
    n = blkif_interrupt(fi, q, nr.done_tag[j], nr.done_status[j])
    if spin_unlock(nr.locks, q, kind, nr.mcs_nodes, j, tmo) != 0:
        return _abort(nr, AB_LOCK, j, q, 1)
    if n < 0:
        return _abort(nr, AB_PROTOCOL, j, q, 0)
    now = monotonic_ns()
    maxp = P[NP_MAX_PIECES]
    c = nr.cnt[j]
    for k in range(n):
        tag = nr.done_tag[j, k]
        if nr.done_status[j, k] != 0:
            return _abort(nr, AB_STATUS, j, tag, nr.done_status[j, k])
        if tag < 0 or tag >= nr.issued.size:
            return _abort(nr, AB_BAD_TAG, j, tag, q)
        times = 1
        if P[NP_INJECT] != 0 and atomic_fetch_add(nr.ctl, C_SEEN, 1) + 1 == P[NP_INJECT_AT]:
            times = 0 if P[NP_INJECT] == INJECT_DROP else 2  # the test hook
        if times == 0:
            continue
        if atomic_fetch_add(nr.completed, tag, times) + times > atomic_load(nr.issued, tag):
            atomic_fetch_add(nr.ctl, C_DUPS, 1)
            return _abort(nr, AB_DUPLICATE, j, tag, q)
        slot = tag // maxp
        # read the slot before the last decrement: its owner may reuse it right after
        t0 = nr.slot_t0[slot]
        write = nr.slot_write[slot]
        nbytes = nr.slot_nsect[slot] * 512
        if atomic_fetch_add(nr.slot_state, slot, -1) == 1:
            if write:
                c[CNT_WRITES] += 1
            else:
                c[CNT_READS] += 1
            c[CNT_BYTES] += nbytes
            if phase == PHASE_MEASURE:
                hist_record(nr.hist[j], now - t0)
    if n > 0:
        c[CNT_IRQS] += 1
        c[CNT_PROGRESS] += n
    return n


# --- the submit path -------------------------------------------------------------------------


@kernel
def submit_pieces(j, slot, p, fi, nr, r):
    """``blkif_queue_rq`` for the driver requests of one I/O, from piece ``p`` on.

    An I/O larger than ``max_sectors`` is split, as the block layer splits a bio. Returns the
    next piece to submit (== pieces when all are on the ring; fewer when the ring was full),
    or -1 after recording an abort reason.
    """
    P = nr.params
    kind, tmo = P[NP_LOCK], P[NP_TIMEOUT_NS]
    maxs, maxp = P[NP_MAX_SECTORS], P[NP_MAX_PIECES]
    nsect = nr.slot_nsect[slot]
    sector = nr.slot_sector[slot]
    op = BLKIF_OP_WRITE if nr.slot_write[slot] else BLKIF_OP_READ
    pieces = (nsect + maxs - 1) // maxs
    while p < pieces:
        off = p * maxs
        n = min(maxs, nsect - off)
        tag = slot * maxp + p
        atomic_fetch_add(nr.issued, tag, 1)  # before the backend can possibly see it
        if spin_lock(nr.locks, r, kind, nr.mcs_nodes, j, tmo) != 0:
            return _abort(nr, AB_LOCK, j, r, 0)
        id = blkif_queue_request(fi, r, op, sector + off, n, nr.slot_buf[slot] + off // 8, tag)
        if id >= 0:
            flush_requests(fi, r)
        if spin_unlock(nr.locks, r, kind, nr.mcs_nodes, j, tmo) != 0:
            return _abort(nr, AB_LOCK, j, r, 1)
        if id == BLKIF_QUEUE_BUSY:
            atomic_fetch_add(nr.issued, tag, -1)
            return p
        if id < 0:
            return _abort(nr, AB_QUEUE, j, r, id)
        p += 1
    return p


@kernel
def _start_io(j, slot, seq, fi, nr, wl, region0):
    """Draw the next I/O into ``slot``; fill a write's buffer with its pattern."""
    is_write, sector, nsect = next_io(wl, nr.streams[j])
    sector += region0
    nr.slot_write[slot] = 1 if is_write else 0
    nr.slot_sector[slot] = sector
    nr.slot_nsect[slot] = nsect
    nr.slot_seq[slot] = seq
    if nr.params[NP_DATA]:
        pfn = nr.slot_buf[slot]
        for i in range(nsect):
            words = fi.pages[pfn + i // 8].view(np.uint64)
            w0 = (i % 8) * 64
            for k in range(64):
                v = pattern_word(j, sector + i, k) if is_write else READ_POISON
                words[w0 + k] = np.uint64(v)
    maxs = nr.params[NP_MAX_SECTORS]
    nr.slot_t0[slot] = monotonic_ns()
    atomic_store(nr.slot_state, slot, (nsect + maxs - 1) // maxs)


@kernel
def _reap(j, slot, seq, fi, nr):
    """The owner's end of an I/O: mark written sectors, check read data. False on a mismatch."""
    if nr.params[NP_DATA]:
        sector = nr.slot_sector[slot]
        pfn = nr.slot_buf[slot]
        for i in range(nr.slot_nsect[slot]):
            s = sector + i
            if nr.slot_write[slot]:
                if nr.wseq[s] > seq:
                    nr.wseq[s] = seq
                continue
            words = fi.pages[pfn + i // 8].view(np.uint64)
            w0 = (i % 8) * 64
            zero = words[w0] == 0
            for k in range(64):
                w = np.int64(words[w0 + k])
                if (zero and w != 0) or (not zero and w != pattern_word(j, s, k)):
                    return _abort(nr, AB_DATA, j, s, k) == 0
            if zero and nr.wseq[s] < nr.slot_seq[slot]:
                return _abort(nr, AB_DATA, j, s, -1) == 0  # a completed write went missing
    nr.slot_state[slot] = SLOT_FREE
    return True


# --- a job --------------------------------------------------------------------------------------


@kernel
def job_loop(j, fi, nr, wl):
    """One fio job on its vCPU: keep ``iodepth`` I/Os in flight, play the bound interrupts.

    Runs until the run drains (every job's I/Os complete) or aborts. Returns 0, or -1 when
    this job recorded the abort reason.
    """
    P = nr.params
    D = P[NP_IODEPTH]
    nrings = P[NP_RINGS]
    spin = P[NP_SPIN]
    r = nr.job_ring[j]
    v = nr.job_vcpu[j]
    base = j * D
    region0 = j * P[NP_REGION]
    nj = P[NP_JOBS]
    c = nr.cnt[j]
    seq = 0
    cur, cur_piece = -1, 0
    stopped = False  # blk_mq_stop_hw_queue: the ring was full
    idle = 0
    while True:
        if atomic_load(nr.ctl, C_ABORT) != 0:
            return 0
        phase = atomic_load(nr.ctl, C_PHASE)
        work = 0
        for q in range(nrings):
            if nr.irq_vcpu[q] == v and evtchn_test_and_clear_pending(fi.evtchn, fi.evtchn_port[q]):
                n = handle_irq(j, q, fi, nr, phase)
                if n < 0:
                    return -1
                work += n
        if stopped and _ring_has_room(fi, r):
            stopped = False
        if cur >= 0 and not stopped:
            p = submit_pieces(j, cur, cur_piece, fi, nr, r)
            if p < 0:
                return -1
            pieces = (nr.slot_nsect[cur] + P[NP_MAX_SECTORS] - 1) // P[NP_MAX_SECTORS]
            work += p - cur_piece
            c[CNT_PROGRESS] += p - cur_piece
            if p == pieces:
                cur = -1
            else:
                cur_piece = p
                stopped = True
        draining = phase >= PHASE_DRAIN
        busy = 0
        for s in range(D):
            slot = base + s
            state = atomic_load(nr.slot_state, slot)
            if state > 0 or slot == cur:
                busy += 1
                continue
            if state == 0:
                if not _reap(j, slot, seq, fi, nr):
                    return -1
                work += 1
            if draining or stopped or cur >= 0:
                continue
            seq += 1
            _start_io(j, slot, seq, fi, nr, wl, region0)
            p = submit_pieces(j, slot, 0, fi, nr, r)
            if p < 0:
                return -1
            work += p
            c[CNT_PROGRESS] += p
            busy += 1
            if p < (nr.slot_nsect[slot] + P[NP_MAX_SECTORS] - 1) // P[NP_MAX_SECTORS]:
                cur, cur_piece = slot, p
                stopped = True
        if draining and busy == 0 and cur < 0:
            atomic_store(nr.job_done, j * 8, 1)
            # keep playing the interrupt for the others until everyone is done
            all_done = True
            for k in range(nj):
                if atomic_load(nr.job_done, k * 8) == 0:
                    all_done = False
                    break
            if all_done:
                return 0
        if work == 0:
            _idle(idle, spin)
            idle += 1
        else:
            idle = 0


# --- the backend ------------------------------------------------------------------------------


@kernel
def backend_loop(r, t, be, nr):
    """blkback ``xen_blkif_schedule`` for ring ``r`` as thread ``t``.

    Waits for the ring's event (``waiting_reqs``) with a bounded spin, then yields; clears it
    and runs ``do_block_io_op``; sets it again when there is more work. The test hook
    ``NP_STALL_RING``/``NP_STALL_AFTER`` makes ring ``r``'s thread stop servicing after that
    many requests (so the watchdog has something to catch). Returns 0, or -1 after an abort.
    """
    P = nr.params
    spin = P[NP_SPIN]
    port = be.evtchn_port[r]
    ev = be.evtchn
    stall = P[NP_STALL_RING] == r
    c = nr.cnt[t]
    idle = 0
    while True:
        if atomic_load(nr.ctl, C_ABORT) != 0 or atomic_load(nr.ctl, C_PHASE) >= PHASE_EXIT:
            return 0
        if stall and be.stats[r, BS_REQUESTS] >= P[NP_STALL_AFTER]:
            sched_yield()  # the artificial stall: the thread lives but services nothing
            continue
        if not evtchn_test_and_clear_pending(ev, port):  # clears waiting_reqs, full barrier
            _idle(idle, spin)
            idle += 1
            continue
        idle = 0
        before = be.stats[r, BS_REQUESTS]
        ret = do_block_io_op(be, r)
        if ret == -EACCES:
            return _abort(nr, AB_HALTED, t, r, 0)
        if ret > 0:
            atomic_store(ev.pending, port, 1)  # waiting_reqs = 1: more to do
        c[CNT_PROGRESS] += be.stats[r, BS_REQUESTS] - before
