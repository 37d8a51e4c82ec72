"""The native engine's thread loops: a guest's vCPUs (fio jobs and the rings' interrupts) and
dom0's vCPUs (``xen_blkif_schedule``).

Every loop here is a ``nogil`` kernel (:func:`xbq._jit.kernel`) and runs on its own OS thread:
one per guest vCPU (:func:`vcpu_loop`) and one per dom0 vCPU that serves a ring
(:func:`dom0_loop`), whatever the number of jobs. They share the blkfront and blkback records
(:mod:`xbq.blkif.blkfront`, :mod:`xbq.blkif.blkback`), the blk-mq hardware queues
(:mod:`xbq.blkif.blk_mq`) and the engine's own records, one per lifetime:

* ``ctl`` (int64 words, the hot ones on their own cache lines): the phase, the first abort
  reason and its details, the number of halted vCPUs;
* ``par`` (:data:`NATIVE_PARAMS_DTYPE`, one record): the run's configuration;
* ``jobs`` (:data:`JOB_DTYPE`): each job's ring, vCPU, region, random stream, sequence number
  and done flag; ``vjobs`` (int64 ``[vcpu, slot]``): the jobs placed on each guest vCPU;
* ``vst`` (int64 ``[thread * VST_WORDS + word]``, a cache line per vCPU thread): halted, the
  wake-up (futex) word, the ring lock held (test mode), jobs waiting for a tag;
* ``rtags`` (int64 ``[ring * 8 + word]``): per hardware queue, blk-mq's tags in use and the
  head and tail of ``tagq`` (int64 ``[ring, capacity]``), the FIFO of jobs asleep in
  ``blk_mq_get_tag`` (the sbitmap wait queue, behind its own lock);
* ``cnt`` (int64 ``[thread, CNT_WORDS]``): counters and time accounts the watchdog and the row
  read while the threads run;
* ``slots`` (:data:`SLOT_DTYPE`, ``[job * iodepth + k]``): each in-flight I/O;
* ``tags`` (:data:`TAG_DTYPE`, ``[slot * max_pieces + piece]``): issues and completions of
  each driver request;
* the locks (:mod:`xbq.engines.native.locks`) and their per-CPU nodes, histograms (one per
  vCPU), and the interrupt handlers' output (one buffer per vCPU). Nothing takes a Python
  lock.

**A guest vCPU** (:func:`vcpu_loop`) runs the jobs placed on it as a guest kernel does. In
turn, each runnable job runs its submit path to completion (:func:`run_job`): it reaps its
completed I/Os and submits new ones until ``iodepth`` are in flight (then it sleeps in
``io_getevents``) or blk-mq has no free tag for its queue (it sleeps in ``blk_mq_get_tag``;
blkfront's tag set has ``BLK_RING_SIZE`` tags per queue). Each submission is
``blkif_queue_rq``: the ring's lock (``io_lock`` in sq, ``ring_lock`` in mq) taken with
interrupts off, the request onto the ring, ``flush_requests``, release. Between jobs, never
inside one, the vCPU takes the interrupts bound to it (each ring's event channel is bound to
one vCPU, ``irq_vcpu``): :func:`handle_irq` runs ``blkif_interrupt`` under the same lock,
restarts the queue, completes the I/Os (which may belong to jobs on any vCPU), frees their
tags and wakes their jobs. A vCPU with nothing runnable and no interrupt pending spins
briefly, then halts (``SCHEDOP_block``: a futex wait on its wake-up word) until it is kicked
(``vcpu_kick``: an event for its interrupt, a completion or a freed tag for one of its jobs).
Switching to another job, halting and being kicked are counted.

**A dom0 vCPU** (:func:`dom0_loop`) runs the ``xen_blkif_schedule`` loops of the rings given
to it (ring ``r`` to dom0 vCPU ``r % dom0_vcpus``): for each ring whose event is pending
(``waiting_reqs``), clear it, run ``do_block_io_op`` (the device completes inline and
``make_response`` pushes and notifies), set it again when there is more work, and kick the
ring's interrupt vCPU if it is halted; with no ring pending it spins, then halts until a
frontend notification kicks it.

**Accounting**: each driver request carries a tag ``(job * iodepth + slot) * max_pieces +
piece``. ``tags[tag].issued`` is counted before the request can become visible,
``.completed`` when its response is handled; a completion beyond the issues is a duplicate
and stops the run. With the ramdisk every write carries the pattern :func:`pattern_word` of
its (job, sector), and every read is checked against it (a sector may read as zeros only if
no write to it had completed before the read was submitted). Each vCPU thread accounts its
time (in :func:`~xbq.xen.atomic.cpu_cycles`, the TSC on x86, converted to ns by the runner):
running jobs' submit paths, in interrupts, holding a ring lock (one acquisition in
``HOLD_SAMPLE`` timed), halted; the time spinning for a lock is the locks' own statistic.
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
    atomic_xchg,
    cmpxchg_i64_at,
    cpu_cycles,
    cpu_relax,
    futex_wait,
    futex_wake,
    load_i64_at,
    monotonic_ns,
    sched_yield,
    store_i64_at,
)
from xbq.xen.evtchn import evtchn_is_pending, evtchn_set_pending, evtchn_test_and_clear_pending

#: The engine's own arrays, by name, as the loops take them in one argument (see the module
#: docstring); ``par`` is a one-record array, ``done`` the interrupt handlers' output
#: (:data:`xbq.blkif.blkfront.DONE_DTYPE`, ``[vcpu, nr_ents]``).
Native = namedtuple("Native", "ctl par jobs vjobs vst rtags tagq irq_vcpu cnt slots tags "
                              "locks mcs hist done wseq")

# --- control words (int64[64]; the hot ones on their own cache lines) ------------------------
C_PHASE = 0
C_ABORT = 8  # first abort reason (AB_*), 0 while running
C_ABORT_WHO = 9  # thread index that stopped the run
C_ABORT_ARG = 10  # ring, tag or sector, by reason
C_ABORT_ARG2 = 11
C_DUPS = 16  # duplicate completions seen
C_SEEN = 24  # driver-request completions handled (for the injection test hook)
C_HALTED = 32  # vCPU threads halted now (kicks are looked for only when some are)
N_CTL = 64

PHASE_WARMUP = 0
PHASE_MEASURE = 1
PHASE_DRAIN = 2  # jobs stop starting I/Os and finish the ones in flight
PHASE_EXIT = 3  # dom0 vCPUs stop

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
AB_IRQ_IN_LOCK = 11  # test mode: an interrupt ran on a vCPU holding a ring lock
AB_TAGQ = 12  # a queue's tag wait list overflowed
AB_NAMES = {AB_WATCHDOG: "watchdog", AB_LOCK: "lock timeout", AB_PROTOCOL: "protocol error",
            AB_STATUS: "error response", AB_DUPLICATE: "duplicate completion",
            AB_BAD_TAG: "unknown tag", AB_QUEUE: "request refused", AB_HALTED: "ring halted",
            AB_DATA: "data mismatch", AB_PYTHON: "thread exception",
            AB_IRQ_IN_LOCK: "interrupt inside a held ring lock",
            AB_TAGQ: "tag wait list overflow"}

#: Test hooks: drop (1) or duplicate (2) the completion of the ``inject_at``-th driver
#: request seen; or (3) enter the interrupt path while holding the ring lock on the
#: ``inject_at``-th submission, which test mode must catch.
INJECT_DROP, INJECT_DUPLICATE, INJECT_IRQ_IN_LOCK = 1, 2, 3

#: The run's configuration, one record: sizes, the lock, the timeouts, the test hooks;
#: ``vcpus`` guest vCPU threads then ``dom0`` dom0 vCPU threads (of ``dom0_vcpus``),
#: ``nr_ents`` tags per queue, ``check`` test mode.
NATIVE_PARAMS_DTYPE = np.dtype([
    ("jobs", "<i8"), ("rings", "<i8"), ("iodepth", "<i8"), ("max_sectors", "<i8"),
    ("max_pieces", "<i8"), ("lock", "<i8"), ("timeout_ns", "<i8"), ("data", "<i8"),
    ("region", "<i8"), ("spin", "<i8"), ("stall_ring", "<i8"), ("stall_after", "<i8"),
    ("inject", "<i8"), ("inject_at", "<i8"), ("vcpus", "<i8"), ("dom0", "<i8"),
    ("dom0_vcpus", "<i8"), ("nr_ents", "<i8"), ("check", "<i8"), ("halt_ns", "<i8"),
], align=True)

#: One fio job: its ring and vCPU, the first sector of its region, its random stream, its
#: I/O sequence number and the flag it raises when, draining, it has nothing in flight.
JOB_DTYPE = np.dtype([("ring", "<i8"), ("vcpu", "<i8"), ("region0", "<i8"), ("done", "<i8"),
                      ("stream", "<u8", 4), ("seq", "<i8"), ("twait", "<i8"),
                      ("pad", "<i8", 6)], align=True)
assert JOB_DTYPE.itemsize == 128

#: One I/O: ``state`` is -1 free, -2 drawn and waiting for a tag, 0 completed (to reap),
#: n > 0 pieces outstanding (atomic); its submit time (ns), direction, first sector,
#: sectors, the job's sequence number and the first guest page of its buffer.
SLOT_DTYPE = np.dtype([("state", "<i8"), ("t0", "<i8"), ("write", "<i8"), ("sector", "<i8"),
                       ("nsect", "<i8"), ("seq", "<i8"), ("buf", "<i8")], align=True)
#: One driver-request tag: issues and completions (atomic).
TAG_DTYPE = np.dtype([("issued", "<i8"), ("completed", "<i8")], align=True)
SLOT_OFF_STATE = SLOT_DTYPE.fields["state"][1]
TAG_OFF_ISSUED = TAG_DTYPE.fields["issued"][1]
TAG_OFF_COMPLETED = TAG_DTYPE.fields["completed"][1]
JOB_OFF_DONE = JOB_DTYPE.fields["done"][1]
JOB_OFF_TWAIT = JOB_DTYPE.fields["twait"][1]

SLOT_FREE = -1
SLOT_TAG_WAIT = -2

# --- per-vCPU-thread state words (int64[thread * VST_WORDS + ...], a cache line each) --------
VST_WORDS = 8
VST_HALTED = 0  # 1 while halted (set before the last look for work)
VST_WAKE = 1  # the futex word a kick bumps
VST_HELD = 2  # test mode: ring + 1 while this vCPU holds a ring lock
RTAG_WORDS = 8  # rtags: one cache line per hardware queue
RT_USED, RT_HEAD, RT_TAIL = 0, 1, 2  # tags in use; tagq's head and tail (under its lock)

# --- per-thread counters (int64[nr_threads, CNT_WORDS]; two cache lines per thread) ---------
# (no separate I/O count: I/Os = reads + writes, so the window's two snapshots, each copied
# while the threads run, can never disagree on iops vs read_iops + write_iops)
(CNT_READS, CNT_WRITES, CNT_BYTES, CNT_IRQS, CNT_PROGRESS, CNT_SWITCHES, CNT_HALTS,
 CNT_KICKS, CNT_TAG_WAITS, CNT_IO_WAITS, T_SUBMIT, T_IRQ, CNT_LOCKS, T_HOLD, T_HALT,
 T_BACKEND) = range(16)
CNT_WORDS = 16

WSEQ_NEVER = np.iinfo(np.int64).max
#: What a read buffer holds until the read's data is copied in (never a pattern, never 0).
READ_POISON = 0x5EADBEEF5EADBEEF
#: One ring-lock acquisition in this many is timed for the hold time (which is scaled up):
#: timing every one slowed one job on one ring by a quarter.
HOLD_SAMPLE = 8
#: Longest halt before a vCPU looks again on its own (ns): a bound, not a wake-up path.
HALT_NS = 2_000_000


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


# --- halting and kicking a vCPU ---------------------------------------------------------------


@kernel(forceinline=True)
def vcpu_kick(nt, u, me):
    """Xen's ``vcpu_kick`` of thread ``u`` if it is halted; counted on thread ``me``.

    Callers made the work visible with an atomic read-modify-write (a full barrier) before
    this looks at ``halted``; the halting vCPU sets ``halted`` before its last look for work.
    The kicker claims the halt (``halted`` 1 -> 0), so of several kickers of one halt only
    one wakes the thread (one futex call), as Xen's ``vcpu_unblock`` acts once per block.
    """
    vst = nt.vst
    b = u * VST_WORDS
    if atomic_load(vst, b + VST_HALTED) == 0 or atomic_cas(vst, b + VST_HALTED, 1, 0) != 1:
        return 0
    atomic_fetch_add(vst, b + VST_WAKE, 1)
    futex_wake(vst, b + VST_WAKE, 1)
    nt.cnt[me][CNT_KICKS] += 1
    return 1


@kernel
def _halt_begin(nt, t):
    """Mark thread ``t`` halted; returns the wake word to sleep on (read after the mark)."""
    b = t * VST_WORDS
    atomic_fetch_add(nt.ctl, C_HALTED, 1)
    atomic_xchg(nt.vst, b + VST_HALTED, 1)
    return atomic_load(nt.vst, b + VST_WAKE)


@kernel
def _halt_sleep(nt, t, wake, c):
    """Sleep until kicked (or ``halt_ns``), then unmark; time and count the halt."""
    b = t * VST_WORDS
    t0 = cpu_cycles()
    futex_wait(nt.vst, b + VST_WAKE, wake, nt.par[0].halt_ns)
    c[T_HALT] += cpu_cycles() - t0
    c[CNT_HALTS] += 1
    _halt_end(nt, t)


@kernel
def _halt_end(nt, t):
    atomic_store(nt.vst, t * VST_WORDS + VST_HALTED, 0)
    atomic_fetch_add(nt.ctl, C_HALTED, -1)


# --- ring locks, with the time they are held ---------------------------------------------------


@kernel(forceinline=True)
def _ring_lock(nt, q, v, c):
    """Take ring ``q``'s lock as vCPU ``v`` (interrupts off). Returns 0, the time it was got
    on an acquisition sampled for the hold time (one in :data:`HOLD_SAMPLE`), or -1 after an
    abort. (The time spent spinning is the lock's own statistic of contended waits.)"""
    par = nt.par[0]
    if spin_lock(nt.locks, q, par.lock, nt.mcs, v, par.timeout_ns) != 0:
        return _abort(nt.ctl, AB_LOCK, v, q, 0)
    if par.check:
        atomic_store(nt.vst, v * VST_WORDS + VST_HELD, q + 1)
    c[CNT_LOCKS] += 1
    if c[CNT_LOCKS] % HOLD_SAMPLE == 0:
        return cpu_cycles()
    return 0


@kernel(forceinline=True)
def _ring_unlock(nt, q, v, c, t1):
    """Release ring ``q``'s lock (``t1``: what :func:`_ring_lock` returned); 0, or -1 after
    an abort."""
    par = nt.par[0]
    if par.check:
        atomic_store(nt.vst, v * VST_WORDS + VST_HELD, 0)
    if t1 > 0:
        c[T_HOLD] += (cpu_cycles() - t1) * HOLD_SAMPLE
    if spin_unlock(nt.locks, q, par.lock, nt.mcs, v, par.timeout_ns) != 0:
        return _abort(nt.ctl, AB_LOCK, v, q, 1)
    return 0


@kernel
def _irq_entry_check(nt, v, q):
    """Test mode: the interrupt must never run on a vCPU that holds a ring lock."""
    held = atomic_load(nt.vst, v * VST_WORDS + VST_HELD)
    if held != 0:
        return _abort(nt.ctl, AB_IRQ_IN_LOCK, v, q, held - 1)
    return 0


# --- blk-mq's tags and their wait list --------------------------------------------------------


@kernel
def _tagq_lock(nt, q, v):
    """Take queue ``q``'s wait-list lock (lock ``rings + q``, of the run's kind)."""
    par = nt.par[0]
    if spin_lock(nt.locks, par.rings + q, par.lock, nt.mcs, v, par.timeout_ns) != 0:
        return _abort(nt.ctl, AB_LOCK, v, q, 2)
    return 0


@kernel
def _tagq_unlock(nt, q, v):
    par = nt.par[0]
    if spin_unlock(nt.locks, par.rings + q, par.lock, nt.mcs, v, par.timeout_ns) != 0:
        return _abort(nt.ctl, AB_LOCK, v, q, 3)
    return 0


@kernel(forceinline=True)
def blk_mq_tag_wakeup(nt, q, n, v):
    """``sbitmap_queue_wake_up`` after ``n`` of queue ``q``'s tags were freed: wake up to
    ``n`` jobs asleep in ``blk_mq_get_tag``, first come first served, kicking their vCPUs.
    A job that stopped waiting (it got a tag on its retry) leaves a stale entry, skipped."""
    rt = nt.rtags
    b = q * RTAG_WORDS
    if atomic_load(rt, b + RT_TAIL) == atomic_load(rt, b + RT_HEAD):
        return 0
    if _tagq_lock(nt, q, v) != 0:
        return -1
    cap = nt.tagq.shape[1]
    woken = 0
    head, tail = rt[b + RT_HEAD], rt[b + RT_TAIL]
    while woken < n and head != tail:
        j = nt.tagq[q, head % cap]
        head += 1
        if cmpxchg_i64_at(nt.jobs, j, JOB_OFF_TWAIT, 1, 0) == 1:
            woken += 1
            vcpu_kick(nt, nt.jobs[j].vcpu, v)
    atomic_store(rt, b + RT_HEAD, head)
    return _tagq_unlock(nt, q, v)


@kernel
def blk_mq_tag_sleep(nt, j, r, v, pieces):
    """Job ``j`` found no free tag on queue ``r``: join the wait list, then try once more
    (``prepare_to_wait``, retry, ``io_schedule``), so a tag freed meanwhile is never missed.

    Returns 1 when the job is now asleep, 0 when the retry got the tags, -1 after an abort.
    """
    rt = nt.rtags
    b = r * RTAG_WORDS
    cap = nt.tagq.shape[1]
    if _tagq_lock(nt, r, v) != 0:
        return -1
    tail = rt[b + RT_TAIL]
    if tail - rt[b + RT_HEAD] >= cap:
        _tagq_unlock(nt, r, v)
        return _abort(nt.ctl, AB_TAGQ, v, r, j)
    nt.tagq[r, tail % cap] = j
    store_i64_at(nt.jobs, j, JOB_OFF_TWAIT, 1)
    atomic_store(rt, b + RT_TAIL, tail + 1)
    if _tagq_unlock(nt, r, v) != 0:
        return -1
    if _get_tags(nt, r, pieces):
        cmpxchg_i64_at(nt.jobs, j, JOB_OFF_TWAIT, 1, 0)
        return 0
    return 1


# --- the interrupt handler ------------------------------------------------------------------


@kernel(forceinline=True)
def _complete(nt, v, q, n, phase):
    """Complete the ``n`` driver requests ``blkif_interrupt`` returned on vCPU ``v``: count
    each exactly once, finish the I/Os whose last piece this was, wake their jobs.

    Returns ``n``, or -1 after recording an abort reason.
    """
    ctl, par, slots, tags = nt.ctl, nt.par[0], nt.slots, nt.tags
    done = nt.done[v]
    now = monotonic_ns()
    maxp, D = par.max_pieces, par.iodepth
    c = nt.cnt[v]
    for k in range(n):
        tag = done[k].tag
        if done[k].status != 0:
            return _abort(ctl, AB_STATUS, v, tag, done[k].status)
        if tag < 0 or tag >= tags.size:
            return _abort(ctl, AB_BAD_TAG, v, tag, q)
        times = 1
        if par.inject in (INJECT_DROP, INJECT_DUPLICATE) and \
                atomic_fetch_add(ctl, C_SEEN, 1) + 1 == par.inject_at:
            times = 0 if par.inject == INJECT_DROP else 2  # the test hook
        if times == 0:
            continue
        if add_i64_at(tags, tag, TAG_OFF_COMPLETED, times) + times > \
                load_i64_at(tags, tag, TAG_OFF_ISSUED):
            atomic_fetch_add(ctl, C_DUPS, 1)
            return _abort(ctl, AB_DUPLICATE, v, tag, q)
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
                hist_record(nt.hist[v], now - t0)
            if atomic_load(ctl, C_HALTED) != 0:
                u = nt.jobs[slot // D].vcpu
                if u != v:
                    vcpu_kick(nt, u, v)  # the job's io_getevents wakes
    if n > 0:
        atomic_fetch_add(nt.rtags, q * RTAG_WORDS + RT_USED, -n)  # blk_mq_put_tag
        if blk_mq_tag_wakeup(nt, q, n, v) != 0:
            return -1
        c[CNT_IRQS] += 1
        c[CNT_PROGRESS] += n
    return n


@kernel(forceinline=True)
def handle_irq(v, q, fe, mq, nt, phase):
    """The interrupt of ring ``q`` on vCPU ``v``: blkfront's ``blkif_interrupt`` under the
    ring lock, the queue's restart (``kick_pending_request_queues``), then the completions.

    Returns the responses handled, or -1 after recording an abort reason.
    """
    ctl, par = nt.ctl, nt.par[0]
    c = nt.cnt[v]
    t_in = cpu_cycles()
    if par.check and _irq_entry_check(nt, v, q) != 0:
        return -1
    t1 = _ring_lock(nt, q, v, c)
    if t1 < 0:
        return -1
    n = blkif_interrupt(fe.info, fe.rinfo, fe.shadow, fe.grants, fe.gnt, fe.mem, q,
                        nt.done[v])
    restarted = 0
    if n >= 0:
        restarted = kick_pending_request_queues(mq.hctx, mq.dispatch, fe.info, fe.rinfo,
                                                fe.shadow, fe.grants, fe.gnt, fe.mem, q)
        if restarted > 0:
            flush_requests(fe.rinfo, fe.mem, fe.evtchn, q)
    if _ring_unlock(nt, q, v, c, t1) != 0:
        return -1
    if n < 0:
        return _abort(ctl, AB_PROTOCOL, v, q, 0)
    if restarted < 0:
        return _abort(ctl, AB_QUEUE, v, q, restarted)
    n = _complete(nt, v, q, n, phase)
    c[T_IRQ] += cpu_cycles() - t_in
    return n


# --- the submit path -------------------------------------------------------------------------


@kernel(forceinline=True)
def submit_io(v, slot, r, fe, mq, nt):
    """``blkif_queue_rq`` for the driver requests of one I/O (split at ``max_sectors`` as the
    block layer splits a bio), each under the ring lock: onto the ring, or onto the stopped
    queue's dispatch list; then kick the ring's dom0 vCPU if it is halted.

    Returns the pieces, or -1 after recording an abort reason.
    """
    ctl, par, slots, tags = nt.ctl, nt.par[0], nt.slots, nt.tags
    maxs, maxp = par.max_sectors, par.max_pieces
    c = nt.cnt[v]
    s = slots[slot]
    op = BLKIF_OP_WRITE if s.write else BLKIF_OP_READ
    pieces = blk_rq_nr_pieces(s.nsect, maxs)
    for p in range(pieces):
        off, n = blk_rq_piece(s.nsect, maxs, p)
        tag = slot * maxp + p
        add_i64_at(tags, tag, TAG_OFF_ISSUED, 1)  # before the backend can possibly see it
        t1 = _ring_lock(nt, r, v, c)
        if t1 < 0:
            return -1
        if par.inject == INJECT_IRQ_IN_LOCK and \
                atomic_fetch_add(ctl, C_SEEN, 1) + 1 == par.inject_at:
            _irq_entry_check(nt, v, r)  # the test hook: what test mode must catch
        rid = blkif_queue_rq(mq.hctx, mq.dispatch, fe.info, fe.rinfo, fe.shadow, fe.grants,
                             fe.gnt, fe.mem, r, op, s.sector + off, n, s.buf + off // 8, tag)
        if rid >= 0:
            flush_requests(fe.rinfo, fe.mem, fe.evtchn, r)
        if _ring_unlock(nt, r, v, c, t1) != 0:
            return -1
        if rid < 0 and rid != BLK_MQ_PARKED:
            return _abort(ctl, AB_QUEUE, v, r, rid)
    vcpu_kick(nt, par.vcpus + r % par.dom0_vcpus, v)  # evtchn_send kicks a halted dom0 vCPU
    return pieces


@kernel
def _draw_io(j, slot, job, mem, par, slots, wl):
    """Draw job ``j``'s next I/O into ``slot`` (it now waits for its tags); fill a write's
    buffer with its pattern."""
    is_write, sector, nsect = next_io(wl, job.stream)
    sector += job.region0
    job.seq += 1
    s = slots[slot]
    s.write = 1 if is_write else 0
    s.sector = sector
    s.nsect = nsect
    s.seq = job.seq
    if par.data:
        base = s.buf * 512  # in 64-bit words: 4096-byte pages are 512 words
        words = mem.view(np.uint64)
        for i in range(nsect):
            w0 = base + i * 64
            for k in range(64):
                v = pattern_word(j, sector + i, k) if is_write else READ_POISON
                words[w0 + k] = np.uint64(v)
    s.t0 = monotonic_ns()  # fio's submission time: a wait for a tag is part of the latency
    s.state = SLOT_TAG_WAIT


@kernel(forceinline=True)
def _get_tags(nt, r, pieces):
    """blk-mq's ``blk_mq_get_tag`` for ``pieces`` requests on queue ``r``, without sleeping:
    True when they were got."""
    b = r * RTAG_WORDS + RT_USED
    if atomic_fetch_add(nt.rtags, b, pieces) + pieces <= nt.par[0].nr_ents:
        return True
    atomic_fetch_add(nt.rtags, b, -pieces)
    return False


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


# --- a job: its submit path, run to completion on its vCPU ------------------------------------


@kernel(forceinline=True)
def run_job(v, j, fe, mq, nt, wl, draining):
    """Run job ``j`` on vCPU ``v`` until it sleeps: reap its completed I/Os, submit new ones
    while it has fewer than ``iodepth`` in flight (then it sleeps in ``io_getevents``) and
    blk-mq gives it tags (else it sleeps in ``blk_mq_get_tag`` until woken).

    Returns the work done (I/Os reaped and driver requests submitted; 0: nothing to do), -1
    after an abort, or -2 when the job is done draining (nothing in flight).
    """
    ctl, par, slots, mem = nt.ctl, nt.par[0], nt.slots, fe.mem
    D = par.iodepth
    job = nt.jobs[j]
    r = job.ring
    base = j * D
    c = nt.cnt[v]
    work = 0
    busy = 0
    for k in range(D):
        slot = base + k
        state = load_i64_at(slots, slot, SLOT_OFF_STATE)
        if state > 0:
            busy += 1
            continue
        if state == 0:
            if not _reap(j, slot, job.seq, mem, ctl, par, slots, nt.wseq):
                return -1
            work += 1
            state = SLOT_FREE
        if draining and state == SLOT_FREE:
            continue
        if state == SLOT_FREE:
            _draw_io(j, slot, job, mem, par, slots, wl)
        busy += 1
        pieces = blk_rq_nr_pieces(slots[slot].nsect, par.max_sectors)
        if not _get_tags(nt, r, pieces):
            asleep = blk_mq_tag_sleep(nt, j, r, v, pieces)
            if asleep < 0:
                return -1
            if asleep == 1:
                c[CNT_TAG_WAITS] += 1
                return work  # asleep until a freed tag wakes it
        store_i64_at(slots, slot, SLOT_OFF_STATE, pieces)
        p = submit_io(v, slot, r, fe, mq, nt)
        if p < 0:
            return -1
        work += p
        c[CNT_PROGRESS] += p
    if draining and busy == 0:
        return -2
    if work > 0 and busy == D:
        c[CNT_IO_WAITS] += 1  # all in flight: io_getevents sleeps
    return work


@kernel
def _job_runnable(nt, j, draining):
    """Whether job ``j`` would do anything if run: not asleep for a tag, and an I/O to reap
    or a free slot to fill."""
    if load_i64_at(nt.jobs, j, JOB_OFF_TWAIT) != 0:
        return False
    D = nt.par[0].iodepth
    for k in range(D):
        state = load_i64_at(nt.slots, j * D + k, SLOT_OFF_STATE)
        if state == 0 or state == SLOT_TAG_WAIT or (state == SLOT_FREE and not draining):
            return True
    return False


@kernel
def _guest_has_work(v, fe, nt, phase):
    """The last look before vCPU ``v`` halts: a pending interrupt or a runnable job."""
    par = nt.par[0]
    for q in range(par.rings):
        if nt.irq_vcpu[q] == v and evtchn_is_pending(fe.evtchn, fe.rinfo[q].evtchn):
            return True
    draining = phase >= PHASE_DRAIN
    for i in range(nt.vjobs.shape[1]):
        j = nt.vjobs[v, i]
        if j < 0:
            break
        if load_i64_at(nt.jobs, j, JOB_OFF_DONE) == 0 and _job_runnable(nt, j, draining):
            return True
    return atomic_load(nt.ctl, C_PHASE) != phase or atomic_load(nt.ctl, C_ABORT) != 0


@kernel
def clock_pair():
    """``(monotonic ns, cpu_cycles)`` read together: two of them give the cycles' rate."""
    return monotonic_ns(), cpu_cycles()


@kernel
def _all_done(nt):
    for k in range(nt.par[0].jobs):
        if load_i64_at(nt.jobs, k, JOB_OFF_DONE) == 0:
            return False
    return True


@kernel
def vcpu_loop(v, fe, mq, nt, wl):
    """Guest vCPU ``v``: take its interrupts between jobs, run its runnable jobs in turn,
    spin, then halt until kicked.

    Runs until the run drains (every job's I/Os complete) or aborts. Returns 0, or -1 when
    this vCPU recorded the abort reason.
    """
    ctl, par = nt.ctl, nt.par[0]
    c = nt.cnt[v]
    nrings = par.rings
    nj = 0
    while nj < nt.vjobs.shape[1] and nt.vjobs[v, nj] >= 0:
        nj += 1
    cur = 0
    last = -1
    idle = 0
    while True:
        if atomic_load(ctl, C_ABORT) != 0:
            return 0
        phase = atomic_load(ctl, C_PHASE)
        draining = phase >= PHASE_DRAIN
        work = 0
        for q in range(nrings):  # interrupts: between jobs, never inside a held ring lock
            if nt.irq_vcpu[q] == v and evtchn_test_and_clear_pending(fe.evtchn,
                                                                      fe.rinfo[q].evtchn):
                n = handle_irq(v, q, fe, mq, nt, phase)
                if n < 0:
                    return -1
                work += n + 1
        for i in range(nj):
            j = nt.vjobs[v, (cur + i) % nj]
            if load_i64_at(nt.jobs, j, JOB_OFF_DONE) != 0 or \
                    load_i64_at(nt.jobs, j, JOB_OFF_TWAIT) != 0:
                continue  # done, or asleep in blk_mq_get_tag
            t0 = cpu_cycles()
            w = run_job(v, j, fe, mq, nt, wl, draining)
            if w == -1:
                return -1
            if w == -2:
                store_i64_at(nt.jobs, j, JOB_OFF_DONE, 1)
                continue
            if w > 0:
                c[T_SUBMIT] += cpu_cycles() - t0
                if last != j:
                    if last >= 0:
                        c[CNT_SWITCHES] += 1  # the guest scheduler switched tasks
                    last = j
                work += w
        if nj > 0:
            cur = (cur + 1) % nj
        if draining and _all_done(nt):
            return 0
        if work > 0:
            idle = 0
            continue
        if idle < par.spin:
            cpu_relax()
            idle += 1
            continue
        wake = _halt_begin(nt, v)
        if _guest_has_work(v, fe, nt, phase):
            _halt_end(nt, v)
        else:
            _halt_sleep(nt, v, wake, c)
        idle = 0


# --- dom0's vCPUs -----------------------------------------------------------------------------


@kernel
def _dom0_has_work(d, be, nt):
    par = nt.par[0]
    for r in range(d, par.rings, par.dom0_vcpus):
        if evtchn_is_pending(be.evtchn, be.rings[r].evtchn):
            return True
    return atomic_load(nt.ctl, C_PHASE) >= PHASE_EXIT or atomic_load(nt.ctl, C_ABORT) != 0


@kernel
def dom0_loop(d, be, nt):
    """dom0 vCPU ``d`` (thread ``vcpus + d``): the ``xen_blkif_schedule`` loops of rings
    ``d, d + dom0_vcpus, ...``.

    For each ring with its event pending (``waiting_reqs``): clear it (a full barrier), run
    ``do_block_io_op``, set it again when there is more work, kick the ring's interrupt vCPU
    if it is halted. With nothing pending: spin, then halt until a notification kicks it. The
    test hook ``stall_ring``/``stall_after`` makes ring ``stall_ring`` stop being serviced
    after that many requests (so the watchdog has something to catch). Returns 0, or -1 after
    an abort.
    """
    ctl, par = nt.ctl, nt.par[0]
    rings, ev = be.rings, be.evtchn
    t = par.vcpus + d
    c = nt.cnt[t]
    idle = 0
    while True:
        if atomic_load(ctl, C_ABORT) != 0 or atomic_load(ctl, C_PHASE) >= PHASE_EXIT:
            return 0
        work = 0
        for r in range(d, par.rings, par.dom0_vcpus):
            if par.stall_ring == r and rings[r].stats[BS_REQUESTS] >= par.stall_after:
                continue  # the artificial stall: the ring is never serviced again
            if not evtchn_test_and_clear_pending(ev, rings[r].evtchn):
                continue
            t0 = cpu_cycles()
            before = rings[r].stats[BS_REQUESTS]
            ret = do_block_io_op(be.blkif, rings, be.pending, be.pgnt, be.maptrack, be.gnt,
                                 be.active, be.mem, ev, be.vbd, be.disk, r)
            if ret == -EACCES:
                return _abort(ctl, AB_HALTED, t, r, 0)
            if ret > 0:
                evtchn_set_pending(ev, rings[r].evtchn)  # waiting_reqs = 1: more to do
            vcpu_kick(nt, nt.irq_vcpu[r], t)  # evtchn_send kicks a halted guest vCPU
            c[T_BACKEND] += cpu_cycles() - t0
            c[CNT_PROGRESS] += rings[r].stats[BS_REQUESTS] - before
            work += 1
        if work > 0:
            idle = 0
            continue
        if idle < par.spin:
            cpu_relax()
            idle += 1
            continue
        if par.stall_ring >= 0:
            sched_yield()  # the stalled ring's thread lives but services nothing
        wake = _halt_begin(nt, t)
        if _dom0_has_work(d, be, nt):
            _halt_end(nt, t)
        else:
            _halt_sleep(nt, t, wake, c)
        idle = 0
