"""The discrete-event engine: one jitted event loop driving the real blkfront and blkback.

Time is virtual, in integer nanoseconds. Every event is ``(time, event id, kind, actor)`` on
the binary heap of :mod:`xbq.des.heap` (ties FIFO by event id), and :func:`_run` is the one
jitted loop that pops and handles them. The protocol work is the real code: a job's
critical section calls :func:`xbq.blkfront.blkif_queue_request` and
:func:`~xbq.blkfront.flush_requests` on the real ring bytes, the backend thread calls
blkback's ``__do_block_io_op`` / :func:`~xbq.blkback.do_block_io_op`, a device completion
calls :func:`~xbq.blkback.xen_blkbk_complete_io` (``make_response``, push, notify), the guest
interrupt calls :func:`~xbq.blkfront.blkif_interrupt` (``FINAL_CHECK_FOR_RESPONSES``). Whether
a notification is sent, whether it raises an upcall (event-channel pending bit), how large a
batch is and when a ring is full therefore come out of the protocol, not out of a formula.
The engine only adds *time*: each step charges its cost from :class:`~xbq.des.params.DesParams`.

Resources
---------
CPUs
    ``vcpus`` guest vCPUs (0 .. V-1) and ``dom0_vcpus`` dom0 vCPUs (V .. V+D-1). Each runs one
    task at a time, without preemption (the driver paths run with interrupts or preemption
    off); a high-priority queue (guest interrupts, backend completions) is served before a
    FIFO run queue of threads (fio jobs, blkback's per-ring threads). A thread that still has
    work keeps its CPU until its quantum ends and another thread waits; starting a thread that
    is not the one that ran last, or that slept, costs a context switch.
Tasks
    ``T_JOB`` (fio job j: draw an I/O, submit cost, take the lock, queue it on the ring, flush,
    release), ``T_IRQ`` (ring r's upcall on the vCPU its event is bound to: entry, take the
    lock, ``blkif_interrupt``, restart parked requests, release, complete the I/Os),
    ``T_BE`` (ring r's blkback thread: consume a batch, optional device-wide lock, hand the
    requests to the device, loop until ``RING_FINAL_CHECK_FOR_REQUESTS`` finds nothing),
    ``T_DONE`` (a device completion on the ring's dom0 vCPU: unmap, ``make_response``).
Locks
    A FIFO spin lock: waiters spin on their CPU (it can do nothing else); at a release the
    next waiter gets the lock after ``handoff_base_ns`` plus, for a ticket lock,
    ``handoff_per_waiter_ns`` per waiter then spinning. ``sq`` and ``mq1`` have one lock for
    submission and completion (``io_lock``); ``mq`` one per ring. An optional device-wide
    backend lock models the 2015 RFC's shared persistent-grant tree.
Device
    null (fixed latency, unbounded parallelism) or SSD-like (``ssd_channels`` FIFO servers,
    exponential or deterministic service).

Not modelled: a physical CPU pool shared by guest and dom0 vCPUs (both sets are dedicated),
interrupt preemption inside a task (interrupts wait for the running task's current step).
The request becomes visible on the ring when its critical section starts (its cost is charged
after), and a response when its completion task starts.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.abi import BLKIF_OP_READ, BLKIF_OP_WRITE
from xbq.blkback import (
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
from xbq.blkfront import blkif_interrupt, blkif_queue_request, flush_requests
from xbq.des.heap import heap_pop, heap_push, new_heap
from xbq.des.params import FIELDS
from xbq.evtchn import evtchn_test_and_clear_pending
from xbq.hist import hist_record, new_hist
from xbq.rng import rng_exponential
from xbq.workload import next_io

# --- parameter indices (DesParams field order) ---------------------------------------------
P_SUBMIT = FIELDS.index("submit_ns")
P_SQ_LOCKED = FIELDS.index("sq_locked_ns")
P_FE_CS = FIELDS.index("fe_cs_ns")
P_IRQ_ENTRY = FIELDS.index("irq_entry_ns")
P_IRQ_BASE = FIELDS.index("irq_base_ns")
P_IRQ_PER_RSP = FIELDS.index("irq_per_rsp_ns")
P_COMPLETE = FIELDS.index("complete_ns")
P_CTX = FIELDS.index("ctx_switch_ns")
P_QUANTUM = FIELDS.index("quantum_ns")
P_THINK = FIELDS.index("think_ns")
P_THINK_EXP = FIELDS.index("think_exp")
P_ARRIVAL = FIELDS.index("arrival_ns")
P_MCS = FIELDS.index("lock_mcs")
P_ACQUIRE = FIELDS.index("lock_acquire_ns")
P_HO_BASE = FIELDS.index("handoff_base_ns")
P_HO_WAITER = FIELDS.index("handoff_per_waiter_ns")
P_EV_SEND = FIELDS.index("evtchn_send_ns")
P_EV_LAT = FIELDS.index("evtchn_latency_ns")
P_BE_WAKE = FIELDS.index("be_wake_ns")
P_BE_BATCH = FIELDS.index("be_batch_ns")
P_BE_REQ = FIELDS.index("be_req_ns")
P_MAP = FIELDS.index("gnt_map_ns")
P_UNMAP = FIELDS.index("gnt_unmap_ns")
P_HIT = FIELDS.index("pgnt_hit_ns")
P_BE_DONE = FIELDS.index("be_done_ns")
P_BE_LOCK = FIELDS.index("be_shared_lock_ns")
P_NULL = FIELDS.index("null_ns")
P_SSD_BASE = FIELDS.index("ssd_base_ns")
P_SSD_SECT = FIELDS.index("ssd_per_sector_ns")
P_SSD_EXP = FIELDS.index("ssd_exp")
P_PCPUS = FIELDS.index("pcpus")
P_PSLICE = FIELDS.index("pcpu_slice_ns")
P_PBOOST = FIELDS.index("pcpu_boost")

# --- integer configuration (cfg vector) --------------------------------------------------
# C_T_WARM / C_T_END: the measured window, set when the warm-up ends (NEVER until then).
# The warm-up ends at the first EV_WARM, from C_WARM_MIN on, that finds C_WARM_IOS I/Os
# completed, or at C_WARM_MAX whatever the count; the window then lasts C_DURATION.
# After C_T_END the run drains: no job starts an I/O, the ones in flight complete, and the
# loop stops when none is left (or C_DRAIN_MAX ns after the window, or when events run out);
# what is still outstanding then was lost. C_INJECT / C_INJECT_AT are a test hook that drops
# or duplicates the completion of the C_INJECT_AT-th driver request.
(C_SQ, C_JOBS, C_VCPUS, C_NCPU, C_RINGS, C_NR_ENTS, C_IODEPTH, C_T_WARM, C_T_END, C_MAXIO,
 C_MAX_SECTORS, C_BUF_PFN, C_OPEN, C_SSD, C_CHANNELS, C_NFLOCKS, C_BELOCK, C_PARKCAP,
 C_QCAP, C_MAX_EVENTS, C_WARM_MIN, C_WARM_MAX, C_WARM_IOS, C_DURATION, C_DRAINING,
 C_DRAIN_MAX, C_INJECT, C_INJECT_AT) = range(28)
N_CFG = 28
INJECT_NONE, INJECT_DROP, INJECT_DUPLICATE = 0, 1, 2
NEVER = np.int64(1) << 62

# --- event kinds ---------------------------------------------------------------------------
EV_PHASE, EV_BE_EVT, EV_BE_WAKE, EV_FE_EVT, EV_DEV, EV_ARRIVAL, EV_THINK, EV_WARM, EV_END, \
    EV_SLICE = range(10)
# EV_PHASE and EV_SLICE carry ``cpu | generation << _GEN_SHIFT``: an event of an older
# generation was cancelled (its vCPU lost its pCPU) and is skipped.
_GEN_SHIFT = 20
_CPU_MASK = (1 << _GEN_SHIFT) - 1
# --- task kinds (CPU queue entries are kind << 40 | actor) ---------------------------------
T_JOB, T_IRQ, T_BE, T_DONE = range(4)
PH_START = 100  # phase of a task just dispatched: _on_phase starts it
_SHIFT = 40
_AMASK = (1 << 40) - 1

# --- accumulators (float64 vector acc), measured in the window [t_warm, t_end] ------------
# A_EVENTS counts the events up to the end of the window, A_DRAIN_EVENTS those after it;
# A_PARTS_OUT is driver requests issued and not yet completed, A_PARTS_DONE those completed;
# A_DUP the completions beyond a tag's issues (A_ERR is then 6, A_ERR_TAG the tag);
# A_IN_FLIGHT the I/Os in flight when the window closed.
(A_DONE, A_READS, A_WRITES, A_BYTES, A_LAT_SUM, A_AREA, A_SUBMITTED, A_COMPLETED, A_EVENTS,
 A_DROPPED, A_PARKED, A_CTX, A_DEV_BUSY, A_ERR, A_MAX_OCC, A_HEAP_MAX, A_DRAIN_EVENTS,
 A_PARTS_OUT, A_PARTS_DONE, A_DUP, A_ERR_TAG, A_IN_FLIGHT) = range(22)
N_ACC = 22

des_state = namedtuple("des_state", [
    "cfg", "heap", "streams",
    # CPUs
    "cur", "phase", "idle", "busy_since", "spin_since", "hold_since", "last_tid", "slept",
    "slice_start", "hiq", "hi_h", "hi_n", "loq", "lo_h", "lo_n", "cpu_busy", "cpu_spin",
    "cpu_hold", "task_n",
    # vCPUs on physical CPUs: on a pCPU?, pending step (due time, or frozen time left),
    # generations of the step and of the slice, waiting since, the pCPU run queue
    "v_run", "v_due", "v_left", "v_gen", "v_rgen", "v_wait_since", "cpu_steal", "prq",
    "prq_h", "prq_n", "pfree",
    # locks
    "lk_holder", "lk_q", "lk_h", "lk_n",
    # jobs
    "job_cpu", "job_ring", "job_state", "job_tag", "credits", "pend", "pend_h", "pend_n",
    # I/Os
    "io_start", "io_job", "io_parts", "io_write", "io_sector", "io_nsect", "io_free",
    "io_nfree", "io_inuse", "issued", "completed",
    # rings
    "ring_irq_cpu", "ring_be_cpu", "park_tag", "park_sector", "park_nsect", "park_h", "park_n",
    "irq_state", "irq_again", "irq_ndone", "done_tag", "done_status", "be_state", "be_again",
    "be_n",
    # device
    "dev_busy", "dq", "dq_h", "dq_n",
    # results
    "acc", "hist", "snap_fs", "snap_bs", "end_fs", "end_bs",
])
des_state.__doc__ = "All mutable state of one run (arrays; see :func:`new_state`)."


def new_state(cfg: np.ndarray, streams: np.ndarray, fs_shape, bs_shape,
              job_cpu: np.ndarray, job_ring: np.ndarray, ring_irq_cpu: np.ndarray,
              ring_be_cpu: np.ndarray, pcpus: int = 0) -> des_state:
    """Allocate the state of one run from its configuration vector (see ``C_*``).

    ``pcpus`` > 0 puts every vCPU on a pool of that many physical CPUs; 0 gives each its own.
    """
    ncpu, jobs, rings, ents = (int(cfg[C_NCPU]), int(cfg[C_JOBS]), int(cfg[C_RINGS]),
                               int(cfg[C_NR_ENTS]))
    maxio, qcap, parkcap = int(cfg[C_MAXIO]), int(cfg[C_QCAP]), int(cfg[C_PARKCAP])
    nlocks = int(cfg[C_NFLOCKS]) + 1
    cap = ncpu + 8 * rings + 2 * rings * ents + jobs * (int(cfg[C_IODEPTH]) + 2) + maxio + 64
    i64 = np.int64

    def z(*shape):
        return np.zeros(shape, i64)

    return des_state(
        cfg=cfg, heap=new_heap(cap), streams=streams,
        cur=np.full(ncpu, -1, i64), phase=z(ncpu), idle=np.ones(ncpu, i64), busy_since=z(ncpu),
        spin_since=z(ncpu), hold_since=z(ncpu), last_tid=np.full(ncpu, -1, i64),
        slept=np.ones(jobs + rings, i64), slice_start=z(ncpu),
        hiq=z(ncpu, qcap), hi_h=z(ncpu), hi_n=z(ncpu), loq=z(ncpu, qcap), lo_h=z(ncpu),
        lo_n=z(ncpu), cpu_busy=np.zeros(ncpu), cpu_spin=np.zeros(ncpu), cpu_hold=np.zeros(ncpu),
        task_n=z(ncpu),
        v_run=np.full(ncpu, 0 if pcpus > 0 else 1, i64), v_due=np.full(ncpu, -1, i64),
        v_left=np.full(ncpu, -1, i64), v_gen=z(ncpu), v_rgen=z(ncpu), v_wait_since=z(ncpu),
        cpu_steal=np.zeros(ncpu), prq=z(ncpu), prq_h=z(1), prq_n=z(1),
        pfree=np.array([pcpus], i64),
        lk_holder=np.full(nlocks, -1, i64), lk_q=z(nlocks, ncpu), lk_h=z(nlocks),
        lk_n=z(nlocks),
        job_cpu=job_cpu.astype(i64), job_ring=job_ring.astype(i64), job_state=z(jobs),
        job_tag=z(jobs), credits=z(jobs), pend=z(jobs, maxio), pend_h=z(jobs), pend_n=z(jobs),
        io_start=z(maxio), io_job=z(maxio), io_parts=z(maxio), io_write=z(maxio),
        io_sector=z(maxio), io_nsect=z(maxio), io_free=np.arange(maxio - 1, -1, -1, dtype=i64),
        io_nfree=np.array([maxio], i64), io_inuse=z(maxio), issued=z(maxio),
        completed=z(maxio),
        ring_irq_cpu=ring_irq_cpu.astype(i64), ring_be_cpu=ring_be_cpu.astype(i64),
        park_tag=z(rings, parkcap), park_sector=z(rings, parkcap), park_nsect=z(rings, parkcap),
        park_h=z(rings), park_n=z(rings), irq_state=z(rings), irq_again=z(rings),
        irq_ndone=z(rings), done_tag=z(rings, ents), done_status=z(rings, ents),
        be_state=z(rings), be_again=z(rings), be_n=z(rings),
        dev_busy=z(1), dq=z(rings * ents), dq_h=z(1), dq_n=z(1),
        acc=np.zeros(N_ACC), hist=new_hist(1)[0], snap_fs=np.zeros(fs_shape, i64),
        snap_bs=np.zeros(bs_shape, i64), end_fs=np.zeros(fs_shape, i64),
        end_bs=np.zeros(bs_shape, i64))


# --- small helpers -----------------------------------------------------------------------------


_I = np.int64  # constants passed to kernels as int64, not literals (one compiled version)
_F = np.float64


@kernel(inline="always")
def _clip(a, b, w0, w1):
    lo = a if a > w0 else w0
    hi = b if b < w1 else w1
    return float(hi - lo) if hi > lo else 0.0


@kernel(inline="always")
def _copy2d(dst, src):
    for i in range(src.shape[0]):
        for k in range(src.shape[1]):
            dst[i, k] = src[i, k]


@kernel(inline="always")
def _ns(x):
    return np.int64(x + 0.5)


@kernel(inline="always")
def _push(s, t, kind, actor):
    if not heap_push(s.heap, t, kind, actor):
        s.acc[A_ERR] = 1.0
    if s.heap.n[0] > s.acc[A_HEAP_MAX]:
        s.acc[A_HEAP_MAX] = s.heap.n[0]


@kernel(inline="always")
def _q_push(q, h, n, cpu, code, front):
    cap = q.shape[1]
    if front:
        h[cpu] = (h[cpu] - 1) % cap
        q[cpu, h[cpu]] = code
    else:
        q[cpu, (h[cpu] + n[cpu]) % cap] = code
    n[cpu] += 1


@kernel(inline="always")
def _q_pop(q, h, n, cpu):
    code = q[cpu, h[cpu]]
    h[cpu] = (h[cpu] + 1) % q.shape[1]
    n[cpu] -= 1
    return code


# --- vCPUs on physical CPUs ---------------------------------------------------------------------
# Every step of a CPU (guest or dom0 vCPU) ends with its next EV_PHASE, scheduled through
# _phase. With a pCPU pool (``pcpus`` > 0) a runnable vCPU may have no pCPU: its pending step
# is then frozen (``v_left``) and resumes when it gets one, so a preempted lock holder keeps
# the lock and a waiter handed the lock while preempted takes it only when it runs again.


@kernel(inline="always")
def _phase(s, cpu, due, t):
    """Schedule ``cpu``'s next step at ``due`` (virtual ns); frozen while it has no pCPU."""
    if s.v_due[cpu] >= 0 or s.v_left[cpu] >= 0:
        s.acc[A_ERR] = 5.0  # two pending steps on one CPU: an engine bug
    if s.v_run[cpu]:
        s.v_due[cpu] = due
        _push(s, due, _I(EV_PHASE), cpu | (s.v_gen[cpu] << _GEN_SHIFT))
    else:
        s.v_left[cpu] = due - t


@kernel
def _pcpu_run(s, P, c, t):
    """vCPU ``c`` gets a pCPU at ``t``: its frozen step resumes and its time slice starts."""
    s.v_run[c] = 1
    s.v_rgen[c] += 1
    left = s.v_left[c]
    if left >= 0:
        s.v_left[c] = -1
        _phase(s, c, t + left, t)
    _push(s, t + _ns(P[P_PSLICE]), _I(EV_SLICE), c | (s.v_rgen[c] << _GEN_SHIFT))


@kernel
def _pcpu_wait(s, c, t, head):
    """vCPU ``c`` is runnable without a pCPU: join the run queue (its head or tail)."""
    s.v_run[c] = 0
    s.v_wait_since[c] = t
    cap = s.prq.shape[0]
    if head:
        s.prq_h[0] = (s.prq_h[0] - 1) % cap
        s.prq[s.prq_h[0]] = c
    else:
        s.prq[(s.prq_h[0] + s.prq_n[0]) % cap] = c
    s.prq_n[0] += 1


@kernel
def _pcpu_next(s, P, t):
    """A pCPU is free at ``t``: run the vCPU at the head of the run queue, or keep it free."""
    if s.prq_n[0] > 0:
        c = s.prq[s.prq_h[0]]
        s.prq_h[0] = (s.prq_h[0] + 1) % s.prq.shape[0]
        s.prq_n[0] -= 1
        s.cpu_steal[c] += _clip(s.v_wait_since[c], t, s.cfg[C_T_WARM], s.cfg[C_T_END])
        _pcpu_run(s, P, c, t)
    else:
        s.pfree[0] += 1


@kernel
def _pcpu_wake(s, P, c, t):
    """An idle vCPU has work: take a free pCPU or wait (BOOST: at the head of the queue)."""
    if s.pfree[0] > 0:
        s.pfree[0] -= 1
        _pcpu_run(s, P, c, t)
    else:
        _pcpu_wait(s, c, t, P[P_PBOOST] != 0.0)


@kernel
def _pcpu_block(s, P, c, t):
    """A vCPU went idle (it blocks in the hypervisor): its pCPU goes to the next in line."""
    s.v_run[c] = 0
    s.v_rgen[c] += 1  # cancels its slice event
    _pcpu_next(s, P, t)


@kernel
def _pcpu_slice(s, P, c, t):
    """vCPU ``c``'s slice ends: if another waits, preempt ``c`` (its step freezes)."""
    if s.prq_n[0] == 0:
        _push(s, t + _ns(P[P_PSLICE]), _I(EV_SLICE), c | (s.v_rgen[c] << _GEN_SHIFT))
        return
    if s.v_due[c] >= 0:
        s.v_left[c] = s.v_due[c] - t
        s.v_due[c] = -1
        s.v_gen[c] += 1  # cancels the pending EV_PHASE
    s.v_rgen[c] += 1
    _pcpu_wait(s, c, t, False)
    _pcpu_next(s, P, t)  # the pCPU c left goes to the head of the queue


# --- locks -------------------------------------------------------------------------------------


@kernel(inline="always")
def _lock_acquire(s, P, lk, cpu, t):
    """Ask for lock ``lk``; the CPU's next EV_PHASE is the grant (it spins until then)."""
    s.spin_since[cpu] = t
    if s.lk_holder[lk] < 0 and s.lk_n[lk] == 0:
        s.lk_holder[lk] = cpu
        _phase(s, cpu, t + _ns(P[P_ACQUIRE]), t)
    else:
        ncpu = s.lk_q.shape[1]
        s.lk_q[lk, (s.lk_h[lk] + s.lk_n[lk]) % ncpu] = cpu
        s.lk_n[lk] += 1


@kernel(inline="always")
def _lock_granted(s, cpu, t):
    w0 = s.cfg[C_T_WARM]
    w1 = s.cfg[C_T_END]
    s.cpu_spin[cpu] += _clip(s.spin_since[cpu], t, w0, w1)
    s.hold_since[cpu] = t


@kernel(inline="always")
def _lock_release(s, P, lk, cpu, t):
    """Release ``lk``: the first waiter gets it after the hand-off time."""
    s.cpu_hold[cpu] += _clip(s.hold_since[cpu], t, s.cfg[C_T_WARM], s.cfg[C_T_END])
    s.lk_holder[lk] = -1
    k = s.lk_n[lk]
    if k > 0:
        nxt = s.lk_q[lk, s.lk_h[lk]]
        s.lk_h[lk] = (s.lk_h[lk] + 1) % s.lk_q.shape[1]
        s.lk_n[lk] = k - 1
        s.lk_holder[lk] = nxt
        ho = P[P_HO_BASE]
        if P[P_MCS] == 0.0:
            ho += P[P_HO_WAITER] * k
        _phase(s, nxt, t + _ns(ho), t)


# --- CPU scheduling --------------------------------------------------------------------------


@kernel(inline="always")
def _enqueue(s, fi, be, wl, P, cpu, kind, actor, hi, front, t):
    code = (np.int64(kind) << _SHIFT) | actor
    if hi:
        _q_push(s.hiq, s.hi_h, s.hi_n, cpu, code, front)
    else:
        _q_push(s.loq, s.lo_h, s.lo_n, cpu, code, front)
    if s.cur[cpu] < 0:
        _dispatch(s, fi, be, wl, P, cpu, t)


@kernel(inline="always")
def _dispatch(s, fi, be, wl, P, cpu, t):
    """The CPU is free: start its next task, or go idle."""
    if s.hi_n[cpu] > 0:
        code = _q_pop(s.hiq, s.hi_h, s.hi_n, cpu)
    elif s.lo_n[cpu] > 0:
        code = _q_pop(s.loq, s.lo_h, s.lo_n, cpu)
    else:
        s.cur[cpu] = -1
        if s.idle[cpu] == 0:
            s.idle[cpu] = 1
            s.cpu_busy[cpu] += _clip(s.busy_since[cpu], t, s.cfg[C_T_WARM], s.cfg[C_T_END])
            if P[P_PCPUS] > 0.0:  # (out of line: the pool is off by default)
                _pcpu_block(s, P, cpu, t)
        return
    if s.idle[cpu]:
        s.idle[cpu] = 0
        s.busy_since[cpu] = t
        if P[P_PCPUS] > 0.0:
            _pcpu_wake(s, P, cpu, t)
    s.cur[cpu] = code
    s.phase[cpu] = PH_START
    s.task_n[cpu] += 1
    _phase(s, cpu, t, t)  # the task starts in _on_phase (one copy of each path)


@kernel(inline="always")
def _switch(s, P, cpu, tid, t):
    """Context-switch cost of starting thread ``tid`` on ``cpu`` (0 if it just ran there)."""
    cost = 0.0
    if s.last_tid[cpu] != tid or s.slept[tid]:
        cost = P[P_CTX]
        s.last_tid[cpu] = tid
        s.slice_start[cpu] = t
        s.acc[A_CTX] += 1.0 if t >= s.cfg[C_T_WARM] and not s.cfg[C_DRAINING] else 0.0
    s.slept[tid] = 0
    return cost


@kernel(inline="always")
def _task_end(s, fi, be, wl, P, cpu, t):
    s.cur[cpu] = -1
    _dispatch(s, fi, be, wl, P, cpu, t)


@kernel(inline="always")
def _yield_or_continue(s, fi, be, wl, P, cpu, kind, actor, t):
    """A thread with more work ends a step: keep the CPU, or requeue behind waiting work.

    Returns True if the thread keeps running (the caller starts its next step)."""
    if s.hi_n[cpu] == 0 and (s.lo_n[cpu] == 0 or t - s.slice_start[cpu] < P[P_QUANTUM]):
        return True
    expired = s.lo_n[cpu] > 0 and t - s.slice_start[cpu] >= P[P_QUANTUM]
    code = (np.int64(kind) << _SHIFT) | actor
    _q_push(s.loq, s.lo_h, s.lo_n, cpu, code, _I(0) if expired else _I(1))
    _task_end(s, fi, be, wl, P, cpu, t)
    return False


# --- jobs ------------------------------------------------------------------------------------


@kernel(inline="always")
def _job_has_work(s, j):
    if s.cfg[C_DRAINING]:
        return False  # the drain: no new I/O
    return s.pend_n[j] > 0 if s.cfg[C_OPEN] else s.credits[j] > 0


@kernel(inline="always")
def _io_alloc(s, t, j):
    n = s.io_nfree[0]
    if n == 0:
        return -1
    tag = s.io_free[n - 1]
    s.io_nfree[0] = n - 1
    s.io_inuse[tag] = 1
    s.io_start[tag] = t
    s.io_job[tag] = j
    return tag


@kernel(inline="always")
def _job_unit(s, wl, P, cpu, j, t, extra):
    """Start one submission of job ``j``: take an I/O, draw it, charge the submit cost."""
    if s.cfg[C_OPEN]:
        tag = s.pend[j, s.pend_h[j]]
        s.pend_h[j] = (s.pend_h[j] + 1) % s.pend.shape[1]
        s.pend_n[j] -= 1
    else:
        tag = _io_alloc(s, t, j)
        s.credits[j] -= 1
    is_write, sector, nsect = next_io(wl, s.streams[j])
    s.io_write[tag] = 1 if is_write else 0
    s.io_sector[tag] = sector
    s.io_nsect[tag] = nsect
    s.cur[cpu] = (np.int64(T_JOB) << _SHIFT) | j
    s.phase[cpu] = 0
    s.acc[A_SUBMITTED] += 1.0
    s.job_tag[j] = tag
    _phase(s, cpu, t + _ns(extra + P[P_SUBMIT]), t)
    return tag


@kernel(inline="always")
def _park(s, r, tag, sector, nsect):
    cap = s.park_tag.shape[1]
    k = (s.park_h[r] + s.park_n[r]) % cap
    s.park_tag[r, k] = tag
    s.park_sector[r, k] = sector
    s.park_nsect[r, k] = nsect
    s.park_n[r] += 1
    s.acc[A_PARKED] += 1.0


@kernel(inline="always")
def _note_occupancy(s, fi, r):
    p = fi.front_pvt[r]
    occ = (np.int64(p.req_prod_pvt) - np.int64(p.rsp_cons)) & 0xFFFFFFFF
    if occ > s.acc[A_MAX_OCC]:
        s.acc[A_MAX_OCC] = occ


@kernel(inline="always")
def _flush(s, fi, be, P, r, t_end_cs):
    """flush_requests on ring r; schedule the backend's upcall; return the sender's cost."""
    port = be.evtchn_port[r]
    up0 = fi.evtchn.upcalls[port]
    cost = 0.0
    if flush_requests(fi, r):
        cost = P[P_EV_SEND]
    if fi.evtchn.upcalls[port] > up0:
        _push(s, t_end_cs + _ns(cost + P[P_EV_LAT]), _I(EV_BE_EVT), r)
    return cost


@kernel(inline="always")
def _job_cs(s, fi, be, P, j, tag, t):
    """Job j holds its ring's lock: queue the I/O (split at max_sectors) and flush."""
    r = s.job_ring[j]
    ms = s.cfg[C_MAX_SECTORS]
    nsect = s.io_nsect[tag]
    nparts = (nsect + ms - 1) // ms
    s.io_parts[tag] = nparts
    s.issued[tag] += nparts  # counted before any part becomes visible to the backend
    s.acc[A_PARTS_OUT] += nparts
    op = BLKIF_OP_WRITE if s.io_write[tag] else BLKIF_OP_READ
    sec = s.io_sector[tag]
    left = nsect
    queued = 0
    for _ in range(nparts):
        n = left if left < ms else ms
        if s.park_n[r] > 0:
            _park(s, r, tag, sec, n)
        else:
            rid = blkif_queue_request(fi, r, op, sec, n, s.cfg[C_BUF_PFN], tag)
            if rid == -1:
                _park(s, r, tag, sec, n)
            elif rid < 0:
                s.acc[A_ERR] = 2.0
            else:
                queued += 1
        sec += n
        left -= n
    cost = nparts * P[P_FE_CS] + (P[P_SQ_LOCKED] if s.cfg[C_SQ] else 0.0)
    if queued:
        _note_occupancy(s, fi, r)
        cost += _flush(s, fi, be, P, r, t + _ns(cost))
    return cost


@kernel(inline="always")
def _job_wake(s, fi, be, wl, P, j, t):
    if s.job_state[j] == 0 and _job_has_work(s, j):
        s.job_state[j] = 1
        _enqueue(s, fi, be, wl, P, s.job_cpu[j], _I(T_JOB), j, _I(0), _I(0), t)


@kernel(inline="always")
def _io_done(s, fi, be, wl, P, tag, t):
    """Every part of I/O ``tag`` has completed at ``t``: account it, give the job a credit."""
    w0 = s.cfg[C_T_WARM]
    w1 = s.cfg[C_T_END]
    st = s.io_start[tag]
    s.acc[A_COMPLETED] += 1.0
    s.acc[A_AREA] += _clip(st, t, w0, w1)
    if t >= w0 and not s.cfg[C_DRAINING]:
        lat = t - st
        s.acc[A_DONE] += 1.0
        s.acc[A_LAT_SUM] += lat
        s.acc[A_BYTES] += s.io_nsect[tag] * 512.0
        if s.io_write[tag]:
            s.acc[A_WRITES] += 1.0
        else:
            s.acc[A_READS] += 1.0
        hist_record(s.hist, lat)
    s.io_inuse[tag] = 0
    s.io_free[s.io_nfree[0]] = tag
    s.io_nfree[0] += 1
    j = s.io_job[tag]
    if not s.cfg[C_OPEN]:
        if P[P_THINK] > 0.0:
            z = rng_exponential(s.streams[j], P[P_THINK]) if P[P_THINK_EXP] != 0.0 \
                else P[P_THINK]
            _push(s, t + _ns(z), _I(EV_THINK), j)
        else:
            s.credits[j] += 1
            _job_wake(s, fi, be, wl, P, j, t)


# --- the guest interrupt -------------------------------------------------------------------


@kernel(inline="always")
def _irq_cs(s, fi, be, P, r, t):
    """Ring r's handler holds the lock: blkif_interrupt, then restart parked requests."""
    n = blkif_interrupt(fi, r, s.done_tag[r], s.done_status[r])
    if n < 0:
        s.acc[A_ERR] = 3.0
        n = 0
    s.irq_ndone[r] = n
    queued = 0
    cap = s.park_tag.shape[1]
    while s.park_n[r] > 0:
        k = s.park_h[r]
        tag = s.park_tag[r, k]
        op = BLKIF_OP_WRITE if s.io_write[tag] else BLKIF_OP_READ
        rid = blkif_queue_request(fi, r, op, s.park_sector[r, k], s.park_nsect[r, k],
                                  s.cfg[C_BUF_PFN], tag)
        if rid < 0:
            break
        s.park_h[r] = (k + 1) % cap
        s.park_n[r] -= 1
        queued += 1
    cost = P[P_IRQ_BASE] + n * P[P_IRQ_PER_RSP] + queued * P[P_FE_CS]
    if queued:
        _note_occupancy(s, fi, r)
        cost += _flush(s, fi, be, P, r, t + _ns(cost))
    return cost


@kernel(inline="always")
def _irq_finish(s, fi, be, wl, P, cpu, r, t):
    """After the lock: complete the I/Os the interrupt consumed, then end the task."""
    for k in range(s.irq_ndone[r]):
        tag = s.done_tag[r, k]
        s.acc[A_PARTS_DONE] += 1.0
        times = 1
        if s.cfg[C_INJECT] != INJECT_NONE and s.acc[A_PARTS_DONE] == s.cfg[C_INJECT_AT]:
            times = 0 if s.cfg[C_INJECT] == INJECT_DROP else 2  # the test hook
        for _ in range(times):
            if s.completed[tag] >= s.issued[tag]:  # more completions than issues
                s.acc[A_DUP] += 1.0
                s.acc[A_ERR_TAG] = tag
                s.acc[A_ERR] = 6.0
                break
            s.completed[tag] += 1
            s.acc[A_PARTS_OUT] -= 1.0
            s.io_parts[tag] -= 1
            if s.io_parts[tag] == 0:
                _io_done(s, fi, be, wl, P, tag, t)
    s.irq_ndone[r] = 0
    if s.irq_again[r]:
        s.irq_state[r] = 1
        _q_push(s.hiq, s.hi_h, s.hi_n, cpu, (np.int64(T_IRQ) << _SHIFT) | r, _I(0))
    else:
        s.irq_state[r] = 0
    _task_end(s, fi, be, wl, P, cpu, t)


# --- the backend ------------------------------------------------------------------------------


@kernel(inline="always")
def _be_consume(s, be, P, cpu, r, t, extra):
    """blkback's thread loop, one pass: consume what the ring holds, charge the batch.

    When nothing is left (``do_block_io_op``'s final check armed ``req_event``), the thread
    will sleep at the end of this step (phase 9)."""
    st = be.stats[r]
    n0 = st[BS_REQUESTS]
    m0 = st[BS_MAP_OPS]
    h0 = st[BS_PERSISTENT_HITS]
    __do_block_io_op(be, r)
    if st[BS_REQUESTS] == n0:
        s.be_again[r] = 0
        do_block_io_op(be, r)
    n = st[BS_REQUESTS] - n0
    s.cur[cpu] = (np.int64(T_BE) << _SHIFT) | r
    if n == 0:
        s.phase[cpu] = 9
        _phase(s, cpu, t + _ns(extra), t)
        return
    cost = extra + P[P_BE_BATCH] + n * P[P_BE_REQ] + (st[BS_MAP_OPS] - m0) * P[P_MAP] \
        + (st[BS_PERSISTENT_HITS] - h0) * P[P_HIT]
    s.phase[cpu] = 0
    s.be_n[r] = n  # requests of this batch still to take the shared backend lock
    _phase(s, cpu, t + _ns(cost), t)


@kernel(inline="always")
def _dev_start(s, P, code, nsect, t):
    w0 = s.cfg[C_T_WARM]
    w1 = s.cfg[C_T_END]
    if not s.cfg[C_SSD]:
        d = _ns(P[P_NULL])
        s.acc[A_DEV_BUSY] += _clip(t, t + d, w0, w1)
        _push(s, t + d, _I(EV_DEV), code)
        return
    if s.dev_busy[0] < s.cfg[C_CHANNELS]:
        s.dev_busy[0] += 1
        mean = P[P_SSD_BASE] + P[P_SSD_SECT] * nsect
        d = rng_exponential(s.streams[s.streams.shape[0] - 1], mean) if P[P_SSD_EXP] != 0.0 \
            else mean
        di = _ns(d)
        s.acc[A_DEV_BUSY] += _clip(t, t + di, w0, w1)
        _push(s, t + di, _I(EV_DEV), code)
    else:
        cap = s.dq.shape[0]
        s.dq[(s.dq_h[0] + s.dq_n[0]) % cap] = code
        s.dq_n[0] += 1


@kernel(inline="always")
def _be_dispatch(s, be, P, r, t):
    ents = s.cfg[C_NR_ENTS]
    while True:
        pidx = blkback_pop_dispatched(be, r)
        if pidx < 0:
            break
        _dev_start(s, P, r * ents + pidx, be.pending[r, pidx].nr_sects, t)


@kernel(inline="always")
def _be_complete(s, fi, be, P, cpu, code, t):
    """A device completion on dom0: xen_blkbk_complete_io (unmap, make_response, notify)."""
    ents = s.cfg[C_NR_ENTS]
    r = code // ents
    pidx = code % ents
    port = fi.evtchn_port[r]
    up0 = fi.evtchn.upcalls[port]
    st = be.stats[r]
    u0 = st[BS_UNMAP_OPS]
    nt0 = st[BS_NOTIFY]
    xen_blkbk_complete_io(be, r, pidx)
    cost = P[P_BE_DONE] + (st[BS_UNMAP_OPS] - u0) * P[P_UNMAP]
    if st[BS_NOTIFY] > nt0:
        cost += P[P_EV_SEND]
    if fi.evtchn.upcalls[port] > up0:
        _push(s, t + _ns(cost + P[P_EV_LAT]), _I(EV_FE_EVT), r)
    s.phase[cpu] = 0
    _phase(s, cpu, t + _ns(cost), t)


# --- the event loop ----------------------------------------------------------------------------


@kernel(inline="always")
def _on_phase(s, fi, be, wl, P, cpu, t):
    code = s.cur[cpu]
    kind = code >> _SHIFT
    a = code & _AMASK
    ph = s.phase[cpu]
    if ph == PH_START and kind == T_JOB:
        _job_unit(s, wl, P, cpu, a, t, _switch(s, P, cpu, a, t))
    elif ph == PH_START and kind == T_IRQ:
        evtchn_test_and_clear_pending(fi.evtchn, fi.evtchn_port[a])
        s.irq_state[a] = 2
        s.irq_again[a] = 0
        s.phase[cpu] = 0
        _phase(s, cpu, t + _ns(P[P_IRQ_ENTRY]), t)
    elif ph == PH_START and kind == T_DONE:
        _be_complete(s, fi, be, P, cpu, a, t)
    elif kind == T_JOB:
        lk = 0 if s.cfg[C_NFLOCKS] == 1 else s.job_ring[a]
        if ph == 0:
            s.phase[cpu] = 1
            _lock_acquire(s, P, lk, cpu, t)
        elif ph == 1:
            _lock_granted(s, cpu, t)
            cost = _job_cs(s, fi, be, P, a, s.job_tag[a], t)
            s.phase[cpu] = 2
            _phase(s, cpu, t + _ns(cost), t)
        else:
            _lock_release(s, P, lk, cpu, t)
            if _job_has_work(s, a):
                if _yield_or_continue(s, fi, be, wl, P, cpu, _I(T_JOB), a, t):
                    _job_unit(s, wl, P, cpu, a, t, _F(0.0))
            else:
                s.job_state[a] = 0
                s.slept[a] = 1
                _task_end(s, fi, be, wl, P, cpu, t)
    elif kind == T_IRQ:
        lk = 0 if s.cfg[C_NFLOCKS] == 1 else a
        if ph == 0:
            s.phase[cpu] = 1
            _lock_acquire(s, P, lk, cpu, t)
        elif ph == 1:
            _lock_granted(s, cpu, t)
            cost = _irq_cs(s, fi, be, P, a, t)
            s.phase[cpu] = 2
            _phase(s, cpu, t + _ns(cost), t)
        elif ph == 2:
            _lock_release(s, P, lk, cpu, t)
            s.phase[cpu] = 3
            _phase(s, cpu, t + _ns(s.irq_ndone[a] * P[P_COMPLETE]), t)
        else:
            _irq_finish(s, fi, be, wl, P, cpu, a, t)
    elif kind == T_BE:
        belock = s.cfg[C_BELOCK]
        if ph == PH_START or ph == 5:  # (re)start the loop: consume a batch
            extra = _switch(s, P, cpu, s.cfg[C_JOBS] + a, t) if ph == PH_START else _F(0.0)
            _be_consume(s, be, P, cpu, a, t, extra)
            return
        if ph == 9:  # nothing left: sleep until the next upcall
            s.be_state[a] = 0
            s.slept[s.cfg[C_JOBS] + a] = 1
            _task_end(s, fi, be, wl, P, cpu, t)
            return
        if ph == 0 and belock >= 0 and P[P_BE_LOCK] > 0.0:
            s.phase[cpu] = 1
            _lock_acquire(s, P, belock, cpu, t)
            return
        if ph == 1:
            _lock_granted(s, cpu, t)
            s.phase[cpu] = 2
            _phase(s, cpu, t + _ns(P[P_BE_LOCK]), t)
            return
        if ph == 2:  # one request's persistent-grant lookups done: release, next request
            _lock_release(s, P, belock, cpu, t)
            s.be_n[a] -= 1
            if s.be_n[a] > 0:
                s.phase[cpu] = 1
                _lock_acquire(s, P, belock, cpu, t)
                return
        _be_dispatch(s, be, P, a, t)
        if _yield_or_continue(s, fi, be, wl, P, cpu, _I(T_BE), a, t):
            s.phase[cpu] = 5
            _phase(s, cpu, t, t)
    else:
        _task_end(s, fi, be, wl, P, cpu, t)


@kernel
def _run(s, fi, be, wl, P):
    """Run the event loop to ``cfg[C_T_END]``; all results land in ``s.acc``, ``s.hist``,
    the per-CPU accumulators and the protocol objects' counters. Returns the events handled.
    """
    cfg = s.cfg
    jobs = cfg[C_JOBS]
    cfg[C_T_WARM] = NEVER
    cfg[C_T_END] = NEVER
    _push(s, cfg[C_WARM_MIN], _I(EV_WARM), _I(0))
    for j in range(jobs):
        if cfg[C_OPEN]:
            _push(s, _ns(rng_exponential(s.streams[jobs + j], P[P_ARRIVAL])), _I(EV_ARRIVAL), j)
        else:
            s.credits[j] = cfg[C_IODEPTH]
            _job_wake(s, fi, be, wl, P, j, _I(0))
    events = 0
    t = 0
    while s.heap.n[0] > 0 and s.acc[A_ERR] == 0.0:
        if cfg[C_DRAINING] and s.acc[A_PARTS_OUT] == 0.0:
            break  # drained: every issued request completed
        t, _, kind, a = heap_pop(s.heap)
        events += 1
        if events == cfg[C_MAX_EVENTS]:
            s.acc[A_ERR] = 4.0
        if cfg[C_DRAINING]:
            s.acc[A_DRAIN_EVENTS] += 1.0
            if t > cfg[C_T_END] + cfg[C_DRAIN_MAX]:
                break  # what is still outstanding is lost
        if kind == EV_PHASE:
            cpu = a & _CPU_MASK
            if (a >> _GEN_SHIFT) != s.v_gen[cpu]:
                continue  # cancelled: its vCPU was preempted (the step resumes later)
            s.v_due[cpu] = -1
            _on_phase(s, fi, be, wl, P, cpu, t)
        elif kind == EV_SLICE:
            cpu = a & _CPU_MASK
            if (a >> _GEN_SHIFT) == s.v_rgen[cpu] and s.v_run[cpu]:
                _pcpu_slice(s, P, cpu, t)
        elif kind == EV_DEV:
            if cfg[C_SSD]:
                s.dev_busy[0] -= 1
                if s.dq_n[0] > 0:
                    c = s.dq[s.dq_h[0]]
                    s.dq_h[0] = (s.dq_h[0] + 1) % s.dq.shape[0]
                    s.dq_n[0] -= 1
                    ents = cfg[C_NR_ENTS]
                    _dev_start(s, P, c, be.pending[c // ents, c % ents].nr_sects, t)
            r = a // cfg[C_NR_ENTS]
            _enqueue(s, fi, be, wl, P, s.ring_be_cpu[r], _I(T_DONE), a, _I(1), _I(0), t)
        elif kind == EV_FE_EVT:
            if s.irq_state[a] == 0:
                s.irq_state[a] = 1
                _enqueue(s, fi, be, wl, P, s.ring_irq_cpu[a], _I(T_IRQ), a, _I(1), _I(0), t)
            elif s.irq_state[a] == 2:
                s.irq_again[a] = 1
        elif kind == EV_BE_EVT:
            # dom0's upcall handler (xen_blkif_be_int): clear, set waiting_reqs, wake
            evtchn_test_and_clear_pending(be.evtchn, be.evtchn_port[a])
            if s.be_state[a] == 0:
                s.be_state[a] = 1
                _push(s, t + _ns(P[P_BE_WAKE]), _I(EV_BE_WAKE), a)
            else:
                s.be_again[a] = 1
        elif kind == EV_BE_WAKE:
            _enqueue(s, fi, be, wl, P, s.ring_be_cpu[a], _I(T_BE), a, _I(0), _I(0), t)
        elif kind == EV_ARRIVAL:
            if cfg[C_DRAINING]:
                continue  # the drain: arrivals stop
            tag = _io_alloc(s, t, a)
            if tag < 0:
                s.acc[A_DROPPED] += 1.0
            else:
                cap = s.pend.shape[1]
                s.pend[a, (s.pend_h[a] + s.pend_n[a]) % cap] = tag
                s.pend_n[a] += 1
                _job_wake(s, fi, be, wl, P, a, t)
            _push(s, t + _ns(rng_exponential(s.streams[jobs + a], P[P_ARRIVAL])), _I(EV_ARRIVAL), a)
        elif kind == EV_THINK:
            s.credits[a] += 1
            _job_wake(s, fi, be, wl, P, a, t)
        elif kind == EV_WARM:
            if s.acc[A_COMPLETED] < cfg[C_WARM_IOS] and t < cfg[C_WARM_MAX]:
                step = cfg[C_WARM_MIN] // 4 if cfg[C_WARM_MIN] >= 400_000 else _I(100_000)
                _push(s, t + step, _I(EV_WARM), _I(0))  # not warm yet: look again later
                continue
            cfg[C_T_WARM] = t
            cfg[C_T_END] = t + cfg[C_DURATION]
            _push(s, cfg[C_T_END], _I(EV_END), _I(0))
            _copy2d(s.snap_fs, fi.stats)
            _copy2d(s.snap_bs, be.stats)
        else:  # EV_END: the window closes; drain what is in flight
            _copy2d(s.end_fs, fi.stats)
            _copy2d(s.end_bs, be.stats)
            s.acc[A_IN_FLIGHT] = _count_in_use(s)
            s.acc[A_EVENTS] = events
            cfg[C_DRAINING] = 1
    # close the open intervals at the end of the window
    w0 = cfg[C_T_WARM]
    w1 = cfg[C_T_END]
    for c in range(s.cur.size):
        if s.idle[c] == 0:
            s.cpu_busy[c] += _clip(s.busy_since[c], w1, w0, w1)
            if s.v_run[c] == 0:
                s.cpu_steal[c] += _clip(s.v_wait_since[c], w1, w0, w1)
    for tag in range(s.io_inuse.size):
        if s.io_inuse[tag]:
            s.acc[A_AREA] += _clip(s.io_start[tag], w1, w0, w1)
    if not cfg[C_DRAINING]:
        s.acc[A_EVENTS] = events
    return events


@kernel
def _count_in_use(s):
    n = 0
    for tag in range(s.io_inuse.size):
        n += s.io_inuse[tag]
    return n
