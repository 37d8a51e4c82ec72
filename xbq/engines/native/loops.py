"""The native engine's thread loops: fio-like jobs (blkfront side) and ``xen_blkif_schedule``.

Every loop here is a ``nogil`` kernel (:func:`xbq._jit.kernel`) and runs on its own OS thread.
They share the blkfront and blkback records (:mod:`xbq.blkif.blkfront`,
:mod:`xbq.blkif.blkback`), the blk-mq hardware queues (:mod:`xbq.blkif.blk_mq`) and the
engine's own records, one per lifetime:

* ``ctl`` (int64 words, the hot ones on their own cache lines): the phase, the first abort
  reason and its details;
* ``par`` (:data:`NATIVE_PARAMS_DTYPE`, one record): the run's configuration;
* ``jobs`` (:data:`JOB_DTYPE`): each job's ring, vCPU, region, random stream, done flag;
* ``cnt`` (int64 ``[thread, CNT_WORDS]``, a cache line per thread): counters the watchdog
  reads while the threads run;
* ``slots`` (:data:`SLOT_DTYPE`, ``[job * iodepth + k]``): each in-flight I/O;
* ``tags`` (:data:`TAG_DTYPE`, ``[slot * max_pieces + piece]``): issues and completions of
  each driver request;
* the locks (:mod:`xbq.engines.native.locks`), histograms, and the interrupt handlers'
  output. Nothing takes a Python lock; the only synchronisation is the protocol's own (ring
  indices with their barriers, event-channel pending bits) and the frontend lock of the mode
  being measured.

Job ``j`` (:func:`job_loop`) runs on guest vCPU ``jobs[j].vcpu`` and submits on ring
``jobs[j].ring`` (blk-mq's queue for that vCPU; ring 0 in ``sq`` mode). Each submission is
``blkif_queue_rq``: take the ring's lock (``io_lock`` in sq, ``ring_lock`` in mq), hand the
request to blk-mq (:func:`~xbq.blkif.blk_mq.blkif_queue_rq`: onto the ring, or onto the
stopped queue's dispatch list when the ring is full), ``flush_requests`` (one push and
notify check per request, as blk-mq blkfront does), release.

Completion: each ring's event channel is bound to one vCPU (``irq_vcpu``). A job on that vCPU
plays the interrupt: whenever it finds the channel pending it runs, under the same lock as
the submit path, ``blkif_interrupt`` and then restarts the queue (the waiting requests go out
while the ring has room), and then completes the requests it returned (which may belong to
any job on the ring) outside the lock, as ``blk_mq_complete_request`` does.

The backend (:func:`backend_loop`) is one thread per ring running ``xen_blkif_schedule``: wait
for the ring's event (``waiting_reqs``: a bounded spin, then ``sched_yield``), clear it, run
``do_block_io_op`` (the device completes inline and ``make_response`` pushes and notifies),
and set it again when ``do_block_io_op`` reports more work.

Accounting: each driver request carries a tag ``(job * iodepth + slot) * max_pieces + piece``.
``tags[tag].issued`` is counted before the request can become visible, ``.completed`` when its
response is handled; a completion beyond the issues is a duplicate and stops the run. With the
ramdisk every write carries the pattern :func:`pattern_word` of its (job, sector), and every
read is checked against it (a sector may read as zeros only if no write to it had completed
before the read was submitted).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blk_mq import (
    BLK_MQ_PARKED,
    blk_rq_nr_pieces,
    blk_rq_piece,
    blkif_queue_rq,
    kick_pending_request_queues,
)
from xbq.blkif.blkback import BS_REQUESTS, EACCES, do_block_io_op
from xbq.blkif.blkfront import blkif_interrupt, flush_requests
from xbq.engines.native.locks import spin_lock, spin_unlock
from xbq.workload.fio import next_io
from xbq.workload.hist import hist_record
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE
from xbq.xen.atomic import (
    add_i64_at,
    atomic_cas,
    atomic_fetch_add,
    atomic_load,
    atomic_store,
    cpu_relax,
    load_i64_at,
    monotonic_ns,
    sched_yield,
    store_i64_at,
    usleep,
)
from xbq.xen.evtchn import evtchn_set_pending, evtchn_test_and_clear_pending

#: The engine's own arrays, by name, as the loops take them in one argument (see the module
#: docstring); ``par`` is a one-record array, ``done`` the interrupt handlers' output
#: (:data:`xbq.blkif.blkfront.DONE_DTYPE`, ``[job, nr_ents]``).
Native = namedtuple("Native", "ctl par jobs irq_vcpu cnt slots tags locks mcs hist done wseq")

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

INJECT_DROP, INJECT_DUPLICATE = 1, 2

#: The run's configuration, one record. ``inject`` / ``inject_at`` are a test hook that drops
#: (1) or duplicates (2) the completion of the ``inject_at``-th driver request seen.
NATIVE_PARAMS_DTYPE = np.dtype([
    ("jobs", "<i8"), ("rings", "<i8"), ("iodepth", "<i8"), ("max_sectors", "<i8"),
    ("max_pieces", "<i8"), ("lock", "<i8"), ("timeout_ns", "<i8"), ("data", "<i8"),
    ("region", "<i8"), ("spin", "<i8"), ("stall_ring", "<i8"), ("stall_after", "<i8"),
    ("inject", "<i8"), ("inject_at", "<i8"),
], align=True)

#: One fio job: its ring and vCPU, the first sector of its region, its random stream and the
#: flag it raises when, draining, it has nothing left in flight (on a cache line of its own).
JOB_DTYPE = np.dtype([("ring", "<i8"), ("vcpu", "<i8"), ("region0", "<i8"), ("done", "<i8"),
                      ("stream", "<u8", 4)], align=True)
assert JOB_DTYPE.itemsize == 64

#: One in-flight I/O: ``state`` is -1 free, 0 completed (to reap), n > 0 pieces outstanding
#: (atomic); its submit time (ns), direction, first sector, sectors, the job's sequence
#: number and the first guest page of its buffer.
SLOT_DTYPE = np.dtype([("state", "<i8"), ("t0", "<i8"), ("write", "<i8"), ("sector", "<i8"),
                       ("nsect", "<i8"), ("seq", "<i8"), ("buf", "<i8")], align=True)
#: One driver-request tag: issues and completions (atomic).
TAG_DTYPE = np.dtype([("issued", "<i8"), ("completed", "<i8")], align=True)
SLOT_OFF_STATE = SLOT_DTYPE.fields["state"][1]
TAG_OFF_ISSUED = TAG_DTYPE.fields["issued"][1]
TAG_OFF_COMPLETED = TAG_DTYPE.fields["completed"][1]
JOB_OFF_DONE = JOB_DTYPE.fields["done"][1]

# --- per-thread counters (int64[nr_threads, CNT_WORDS]; a cache line per thread) ------------
# (no separate I/O count: I/Os = reads + writes, so the window's two snapshots, each copied
# while the threads run, can never disagree on iops vs read_iops + write_iops)
CNT_READS, CNT_WRITES, CNT_BYTES, CNT_IRQS, CNT_PROGRESS = range(5)
CNT_WORDS = 8

SLOT_FREE = -1
WSEQ_NEVER = np.iinfo(np.int64).max
#: What a read buffer holds until the read's data is copied in (never a pattern, never 0).
READ_POISON = 0x5EADBEEF5EADBEEF
#: Yields of an idle thread before it starts sleeping (a few ms of yielding).
IDLE_YIELDS = 1000
#: Sleep of a long-idle thread (us): the kthread asleep on its waitqueue, a vCPU halted.
IDLE_SLEEP_US = 50


@kernel
def pattern_word(job, sector, k):
    """Word ``k`` (0..63) of sector ``sector`` as job ``job`` writes it: never zero (int64)."""
    return (np.int64(job + 1) << 56) | (np.int64(sector) << 8) | np.int64(k)


@kernel
def _abort(ctl, reason, who, arg, arg2):
    """Record the first reason to stop the run; every loop sees ``C_ABORT`` and returns."""
    if atomic_cas(ctl, C_ABORT, 0, reason) == 0:
        atomic_store(ctl, C_ABORT_WHO, who)
        atomic_store(ctl, C_ABORT_ARG, arg)
        atomic_store(ctl, C_ABORT_ARG2, arg2)
    return -1


@kernel(forceinline=True)
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


# --- the interrupt handler ------------------------------------------------------------------


@kernel(forceinline=True)
def handle_irq(j, q, fe, mq, nt, phase):
    """blkfront's ``blkif_interrupt`` for ring ``q``, run by job ``j``, the queue's restart
    (``kick_pending_request_queues``), then the completions.

    Returns the responses handled, or -1 after recording an abort reason.
    """
    ctl, par, cnt, slots, tags = nt.ctl, nt.par[0], nt.cnt, nt.slots, nt.tags
    kind, tmo = par.lock, par.timeout_ns
    if spin_lock(nt.locks, q, kind, nt.mcs, j, tmo) != 0:
        return _abort(ctl, AB_LOCK, j, q, 0)
    done = nt.done[j]
    n = blkif_interrupt(fe.info, fe.rinfo, fe.shadow, fe.grants, fe.gnt, fe.mem, q, done)
    restarted = 0
    if n >= 0:
        restarted = kick_pending_request_queues(mq.hctx, mq.dispatch, fe.info, fe.rinfo,
                                                fe.shadow, fe.grants, fe.gnt, fe.mem, q)
        if restarted > 0:
            flush_requests(fe.rinfo, fe.mem, fe.evtchn, q)
    if spin_unlock(nt.locks, q, kind, nt.mcs, j, tmo) != 0:
        return _abort(ctl, AB_LOCK, j, q, 1)
    if n < 0:
        return _abort(ctl, AB_PROTOCOL, j, q, 0)
    if restarted < 0:
        return _abort(ctl, AB_QUEUE, j, q, restarted)
    now = monotonic_ns()
    maxp = par.max_pieces
    c = cnt[j]
    for k in range(n):
        tag = done[k].tag
        if done[k].status != 0:
            return _abort(ctl, AB_STATUS, j, tag, done[k].status)
        if tag < 0 or tag >= tags.size:
            return _abort(ctl, AB_BAD_TAG, j, tag, q)
        times = 1
        if par.inject != 0 and atomic_fetch_add(ctl, C_SEEN, 1) + 1 == par.inject_at:
            times = 0 if par.inject == INJECT_DROP else 2  # the test hook
        if times == 0:
            continue
        if add_i64_at(tags, tag, TAG_OFF_COMPLETED, times) + times > \
                load_i64_at(tags, tag, TAG_OFF_ISSUED):
            atomic_fetch_add(ctl, C_DUPS, 1)
            return _abort(ctl, AB_DUPLICATE, j, tag, q)
        slot = tag // maxp
        s = slots[slot]
        # read the slot before the last decrement: its owner may reuse it right after
        t0 = s.t0
        write = s.write
        nbytes = s.nsect * 512
        if add_i64_at(slots, slot, SLOT_OFF_STATE, -1) == 1:
            if write:
                c[CNT_WRITES] += 1
            else:
                c[CNT_READS] += 1
            c[CNT_BYTES] += nbytes
            if phase == PHASE_MEASURE:
                hist_record(nt.hist[j], now - t0)
    if n > 0:
        c[CNT_IRQS] += 1
        c[CNT_PROGRESS] += n
    return n


# --- the submit path -------------------------------------------------------------------------


@kernel(forceinline=True)
def submit_io(j, slot, r, fe, mq, nt):
    """``blkif_queue_rq`` for the driver requests of one I/O (split at ``max_sectors`` as the
    block layer splits a bio): each goes onto the ring, or waits on the stopped queue.

    Returns the pieces, or -1 after recording an abort reason.
    """
    ctl, par, slots, tags, locks, mcs = nt.ctl, nt.par[0], nt.slots, nt.tags, nt.locks, nt.mcs
    kind, tmo = par.lock, par.timeout_ns
    maxs, maxp = par.max_sectors, par.max_pieces
    s = slots[slot]
    op = BLKIF_OP_WRITE if s.write else BLKIF_OP_READ
    pieces = blk_rq_nr_pieces(s.nsect, maxs)
    for p in range(pieces):
        off, n = blk_rq_piece(s.nsect, maxs, p)
        tag = slot * maxp + p
        add_i64_at(tags, tag, TAG_OFF_ISSUED, 1)  # before the backend can possibly see it
        if spin_lock(locks, r, kind, mcs, j, tmo) != 0:
            return _abort(ctl, AB_LOCK, j, r, 0)
        rid = blkif_queue_rq(mq.hctx, mq.dispatch, fe.info, fe.rinfo, fe.shadow, fe.grants,
                             fe.gnt, fe.mem, r, op, s.sector + off, n, s.buf + off // 8, tag)
        if rid >= 0:
            flush_requests(fe.rinfo, fe.mem, fe.evtchn, r)
        if spin_unlock(locks, r, kind, mcs, j, tmo) != 0:
            return _abort(ctl, AB_LOCK, j, r, 1)
        if rid < 0 and rid != BLK_MQ_PARKED:
            return _abort(ctl, AB_QUEUE, j, r, rid)
    return pieces


@kernel
def _start_io(j, slot, seq, job, mem, par, slots, wl):
    """Draw the next I/O into ``slot``; fill a write's buffer with its pattern."""
    is_write, sector, nsect = next_io(wl, job.stream)
    sector += job.region0
    s = slots[slot]
    s.write = 1 if is_write else 0
    s.sector = sector
    s.nsect = nsect
    s.seq = seq
    if par.data:
        base = s.buf * 512  # in 64-bit words: 4096-byte pages are 512 words
        words = mem.view(np.uint64)
        for i in range(nsect):
            w0 = base + i * 64
            for k in range(64):
                v = pattern_word(j, sector + i, k) if is_write else READ_POISON
                words[w0 + k] = np.uint64(v)
    s.t0 = monotonic_ns()
    store_i64_at(slots, slot, SLOT_OFF_STATE, blk_rq_nr_pieces(nsect, par.max_sectors))


@kernel
def _reap(j, slot, seq, mem, ctl, par, slots, wseq):
    """The owner's end of an I/O: mark written sectors, check read data. False on a mismatch."""
    s = slots[slot]
    if par.data:
        words = mem.view(np.uint64)
        for i in range(s.nsect):
            sec = s.sector + i
            if s.write:
                if wseq[sec] > seq:
                    wseq[sec] = seq
                continue
            w0 = s.buf * 512 + i * 64
            zero = words[w0] == 0
            for k in range(64):
                w = np.int64(words[w0 + k])
                if (zero and w != 0) or (not zero and w != pattern_word(j, sec, k)):
                    return _abort(ctl, AB_DATA, j, sec, k) == 0
            if zero and wseq[sec] < s.seq:
                return _abort(ctl, AB_DATA, j, sec, -1) == 0  # a completed write went missing
    s.state = SLOT_FREE
    return True


# --- a job --------------------------------------------------------------------------------------


@kernel
def job_loop(j, fe, mq, nt, wl):
    """One fio job on its vCPU: keep ``iodepth`` I/Os in flight, play the bound interrupts.

    Runs until the run drains (every job's I/Os complete) or aborts. Returns 0, or -1 when
    this job recorded the abort reason.
    """
    ctl, par, jobs, slots, mem = nt.ctl, nt.par[0], nt.jobs, nt.slots, fe.mem
    D = par.iodepth
    nrings = par.rings
    job = jobs[j]
    r = job.ring
    v = job.vcpu
    base = j * D
    nj = par.jobs
    c = nt.cnt[j]
    seq = 0
    idle = 0
    while True:
        if atomic_load(ctl, C_ABORT) != 0:
            return 0
        phase = atomic_load(ctl, C_PHASE)
        work = 0
        for q in range(nrings):
            if nt.irq_vcpu[q] == v and evtchn_test_and_clear_pending(fe.evtchn,
                                                                      fe.rinfo[q].evtchn):
                n = handle_irq(j, q, fe, mq, nt, phase)
                if n < 0:
                    return -1
                work += n
        draining = phase >= PHASE_DRAIN
        busy = 0
        for k in range(D):
            slot = base + k
            state = load_i64_at(slots, slot, SLOT_OFF_STATE)
            if state > 0:
                busy += 1
                continue
            if state == 0:
                if not _reap(j, slot, seq, mem, ctl, par, slots, nt.wseq):
                    return -1
                work += 1
            if draining:
                continue
            seq += 1
            _start_io(j, slot, seq, job, mem, par, slots, wl)
            p = submit_io(j, slot, r, fe, mq, nt)
            if p < 0:
                return -1
            work += p
            c[CNT_PROGRESS] += p
            busy += 1
        if draining and busy == 0:
            store_i64_at(jobs, j, JOB_OFF_DONE, 1)
            # keep playing the interrupt for the others until everyone is done
            all_done = True
            for k in range(nj):
                if load_i64_at(jobs, k, JOB_OFF_DONE) == 0:
                    all_done = False
                    break
            if all_done:
                return 0
        if work == 0:
            _idle(idle, par.spin)
            idle += 1
        else:
            idle = 0


# --- the backend ------------------------------------------------------------------------------


@kernel
def backend_loop(r, t, be, nt):
    """blkback ``xen_blkif_schedule`` for ring ``r`` as thread ``t``.

    Waits for the ring's event (``waiting_reqs``) with a bounded spin, then yields; clears it
    and runs ``do_block_io_op``; sets it again when there is more work. The test hook
    ``stall_ring``/``stall_after`` makes ring ``r``'s thread stop servicing after that many
    requests (so the watchdog has something to catch). Returns 0, or -1 after an abort.
    """
    ctl, par = nt.ctl, nt.par[0]
    rings, ev = be.rings, be.evtchn
    port = rings[r].evtchn
    stall = par.stall_ring == r
    c = nt.cnt[t]
    idle = 0
    while True:
        if atomic_load(ctl, C_ABORT) != 0 or atomic_load(ctl, C_PHASE) >= PHASE_EXIT:
            return 0
        if stall and rings[r].stats[BS_REQUESTS] >= par.stall_after:
            sched_yield()  # the artificial stall: the thread lives but services nothing
            continue
        if not evtchn_test_and_clear_pending(ev, port):  # clears waiting_reqs, full barrier
            _idle(idle, par.spin)
            idle += 1
            continue
        idle = 0
        before = rings[r].stats[BS_REQUESTS]
        ret = do_block_io_op(be.blkif, rings, be.pending, be.pgnt, be.maptrack, be.gnt,
                             be.active, be.mem, ev, be.vbd, be.disk, r)
        if ret == -EACCES:
            return _abort(ctl, AB_HALTED, t, r, 0)
        if ret > 0:
            evtchn_set_pending(ev, port)  # waiting_reqs = 1: more to do
        c[CNT_PROGRESS] += rings[r].stats[BS_REQUESTS] - before
