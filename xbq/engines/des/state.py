"""The twin's state: one structured record array per lifetime, and its constants.

* ``sim`` (:data:`SIM_DTYPE`, one record): the run's configuration (``cfg``: counts, the
  measured window, switches), its accumulators (``acc_*``, float64, measured in the window),
  the scalars of the heap, the pCPU pool and the device queue, and the latency histogram;
* ``cpus`` (:data:`CPU_DTYPE`, one per guest or dom0 vCPU) with ``runq``
  (``int64[cpu, 2, capacity]``: each CPU's high-priority and thread run queues);
* ``jobs`` (:data:`JOB_DTYPE`), with ``pend`` (``int64[job, capacity]``, arrived I/Os of an
  open loop) and ``streams`` (each job's random streams, then the device's);
* ``ios`` (:data:`IO_DTYPE`, one per I/O tag: the I/O in flight under it, and the tag's
  issues and completions);
* ``drings`` (:func:`dring_dtype`, one per ring: the interrupt's and the backend thread's
  state, the counter snapshots of the window), with ``done`` (``int64[ring, 2, nr_ents]``:
  what ``blkif_interrupt`` completed, tags then statuses);
* ``locks`` (:data:`LOCK_DTYPE`) with ``lockq`` (``int64[lock, ncpu]``: FIFO waiters);
* ``heap`` (``int64[capacity, 4]``: time, event id, kind, actor; :mod:`xbq.engines.des.heap`);
* ``prq`` (the pCPU run queue) and ``dq`` (the SSD's FIFO), ``int64`` vectors.

Task phases, event kinds and error codes are named constants here; frames and errors show
their names (:data:`ERRORS`).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.workload.hist import NR_BUCKETS

NEVER = np.int64(1) << 62

# --- event kinds ---------------------------------------------------------------------------
EV_PHASE, EV_BE_EVT, EV_BE_WAKE, EV_FE_EVT, EV_DEV, EV_ARRIVAL, EV_THINK, EV_WARM, EV_END, \
    EV_SLICE = range(10)
EVENT_NAMES = ("phase", "backend event", "backend wake", "frontend event", "device",
               "arrival", "think", "warm-up check", "end of window", "pCPU slice")
# EV_PHASE and EV_SLICE carry ``cpu | generation << GEN_SHIFT``: an event of an older
# generation was cancelled (its vCPU lost its pCPU) and is skipped.
GEN_SHIFT = 20
CPU_MASK = (1 << GEN_SHIFT) - 1

#: Delay lines of the event list (:mod:`xbq.engines.des.heap`): the end of a pCPU slice, a
#: null-device completion, a backend thread's wake-up.
LINE_SLICE, LINE_DEV, LINE_WAKE = range(3)
NR_LINES = 3

# --- tasks (a CPU queue entry is kind << TASK_SHIFT | actor) and their phases -------------------
T_JOB, T_IRQ, T_BE, T_DONE = range(4)
TASK_NAMES = ("fio job", "guest interrupt", "blkback thread", "device completion")
TASK_SHIFT = 40
ACTOR_MASK = (1 << TASK_SHIFT) - 1
#: Phase of a task just dispatched: the phase handler starts it.
PH_START = 100
#: Job and interrupt: take the lock, hold it (the critical section), after the lock.
PH_LOCK, PH_CRITICAL, PH_RELEASE, PH_COMPLETE = 0, 1, 2, 3
#: Backend thread: consumed a batch (then the shared lock per request), loop again, sleep.
PH_BE_BATCH, PH_BE_LOCKED, PH_BE_HELD = 0, 1, 2
PH_BE_LOOP = 5
PH_BE_SLEEP = 9

# --- error codes (``sim.acc_err``) ------------------------------------------------------------
ERR_HEAP_FULL, ERR_QUEUE, ERR_PROTOCOL, ERR_EVENT_LIMIT, ERR_TWO_STEPS, ERR_DUPLICATE = \
    range(1, 7)
ERRORS = {ERR_HEAP_FULL: "the event heap is full",
          ERR_QUEUE: "blkif_queue_request refused a request",
          ERR_PROTOCOL: "blkfront saw a protocol error",
          ERR_EVENT_LIMIT: "the event limit was reached",
          ERR_TWO_STEPS: "two pending steps on one CPU (an engine bug)",
          ERR_DUPLICATE: "a request completed more often than it was issued (duplicate "
                         "completion)"}

INJECT_NONE, INJECT_DROP, INJECT_DUPLICATE = 0, 1, 2

#: The run's scalars. Configuration: ``t_warm`` / ``t_end`` bound the measured window (NEVER
#: until the warm-up ends: at the first warm-up check from ``warm_min`` that finds
#: ``warm_ios`` I/Os completed, or at ``warm_max``); after ``t_end`` the run drains (no new
#: I/O) for at most ``drain_max`` ns. ``inject``/``inject_at`` are a test hook dropping or
#: duplicating the completion of the ``inject_at``-th driver request.
SIM_DTYPE = np.dtype([
    # configuration
    ("sq", "<i8"), ("jobs", "<i8"), ("vcpus", "<i8"), ("ncpu", "<i8"), ("rings", "<i8"),
    ("nr_ents", "<i8"), ("iodepth", "<i8"), ("t_warm", "<i8"), ("t_end", "<i8"),
    ("maxio", "<i8"), ("max_sectors", "<i8"), ("buf_pfn", "<i8"), ("open", "<i8"),
    ("ssd", "<i8"), ("channels", "<i8"), ("nflocks", "<i8"), ("belock", "<i8"),
    ("max_events", "<i8"), ("warm_min", "<i8"), ("warm_max", "<i8"), ("warm_ios", "<i8"),
    ("duration", "<i8"), ("draining", "<i8"), ("drain_max", "<i8"), ("inject", "<i8"),
    ("inject_at", "<i8"), ("tag_depth", "<i8"),
    # scalars of the event list (:mod:`xbq.engines.des.heap`: the heap's size and capacity,
    # the next event id, the next-event slot: is it full, the event's time, id, kind and
    # actor; the delay lines' capacity, heads and lengths), the pool, the device and the I/O
    # free list
    ("heap_n", "<i8"), ("heap_cap", "<i8"), ("next_eid", "<i8"), ("hot_n", "<i8"),
    ("hot_t", "<i8"), ("hot_e", "<i8"), ("hot_k", "<i8"), ("hot_a", "<i8"), ("dl_cap", "<i8"),
    ("dl_h", "<i8", NR_LINES), ("dl_n", "<i8", NR_LINES), ("prq_h", "<i8"), ("prq_n", "<i8"),
    ("pfree", "<i8"), ("dev_busy", "<i8"), ("dq_h", "<i8"), ("dq_n", "<i8"),
    ("io_free", "<i8"),
    # accumulators: I/Os done in the window, their reads, writes, bytes and latency sum, the
    # area under the I/Os in flight, I/Os submitted and completed (whole run), events (to the
    # end of the window; the drain's apart), arrivals dropped, requests parked, context
    # switches, device busy time, the error code (and its tag), the most requests on one ring,
    # the largest heap, requests issued and not yet completed, completed, duplicated, and the
    # I/Os in flight when the window closed, job sleeps waiting for a free request (tag)
    ("acc_done", "<f8"), ("acc_reads", "<f8"), ("acc_writes", "<f8"), ("acc_bytes", "<f8"),
    ("acc_lat_sum", "<f8"), ("acc_area", "<f8"), ("acc_submitted", "<f8"),
    ("acc_completed", "<f8"), ("acc_events", "<f8"), ("acc_dropped", "<f8"),
    ("acc_parked", "<f8"), ("acc_ctx", "<f8"), ("acc_dev_busy", "<f8"), ("acc_err", "<f8"),
    ("acc_max_occ", "<f8"), ("acc_heap_max", "<f8"), ("acc_drain_events", "<f8"),
    ("acc_parts_out", "<f8"), ("acc_parts_done", "<f8"), ("acc_dup", "<f8"),
    ("acc_err_tag", "<f8"), ("acc_in_flight", "<f8"), ("acc_tag_waits", "<f8"),
    ("hist", "<i8", NR_BUCKETS),
], align=True)

#: One guest or dom0 vCPU: the task it runs (``kind << TASK_SHIFT | actor``, -1 idle), the
#: task's phase, idle, when it went busy, began spinning and took its lock, the thread that
#: ran last and the start of its quantum, its run queues' heads and lengths, tasks started;
#: on a pCPU pool, whether it has a pCPU, its pending step (due time, or frozen time left),
#: the generations of that step and of its slice, since when it waits; busy, spinning,
#: holding and steal time in the window (ns).
CPU_DTYPE = np.dtype([
    ("cur", "<i8"), ("phase", "<i8"), ("idle", "<i8"), ("busy_since", "<i8"),
    ("spin_since", "<i8"), ("hold_since", "<i8"), ("last_tid", "<i8"), ("slice_start", "<i8"),
    ("hi_h", "<i8"), ("hi_n", "<i8"), ("lo_h", "<i8"), ("lo_n", "<i8"), ("task_n", "<i8"),
    ("v_run", "<i8"), ("v_due", "<i8"), ("v_left", "<i8"), ("v_gen", "<i8"), ("v_rgen", "<i8"),
    ("v_wait_since", "<i8"),
    ("busy", "<f8"), ("spin", "<f8"), ("hold", "<f8"), ("steal", "<f8"),
], align=True)

#: One fio job: its vCPU and ring, state (0 asleep, 1 queued or running, 2 asleep in
#: ``blk_mq_get_tag`` waiting for a free request of its queue), the I/O it is submitting,
#: its credits (I/Os it may start), its open-loop queue, and whether its thread slept since
#: it last ran.
JOB_DTYPE = np.dtype([
    ("cpu", "<i8"), ("ring", "<i8"), ("state", "<i8"), ("tag", "<i8"), ("credits", "<i8"),
    ("pend_h", "<i8"), ("pend_n", "<i8"), ("slept", "<i8"),
], align=True)

#: One I/O tag: the I/O in flight under it (start, job, driver requests outstanding, write?,
#: first sector, sectors, in use, free-list link) and the tag's issues and completions.
IO_DTYPE = np.dtype([
    ("start", "<i8"), ("job", "<i8"), ("parts", "<i8"), ("write", "<i8"), ("sector", "<i8"),
    ("nsect", "<i8"), ("inuse", "<i8"), ("next", "<i8"), ("issued", "<i8"),
    ("completed", "<i8"),
], align=True)

#: One ring, as the twin drives it: the CPUs its interrupt and backend thread run on, the
#: interrupt's state (0 idle, 1 queued, 2 running), a second event arrived meanwhile,
#: completions to finish, the backend thread's state and "more work" flag, requests of its
#: batch still to take the shared lock, whether its thread slept, its queue's requests
#: (blk-mq tags) in use, the jobs asleep waiting for one and where the next wake-up scan
#: starts, and the frontend's and backend's counters at the start and the end of the window.
DRING_DTYPE_FIELDS = [
    ("irq_cpu", "<i8"), ("be_cpu", "<i8"), ("irq_state", "<i8"), ("irq_again", "<i8"),
    ("irq_ndone", "<i8"), ("be_state", "<i8"), ("be_again", "<i8"), ("be_n", "<i8"),
    ("be_slept", "<i8"), ("tags", "<i8"), ("tag_wait", "<i8"), ("tag_rr", "<i8"),
]

#: One virtual spin lock: its holder (a CPU, -1 free) and its FIFO of waiters in ``lockq``.
LOCK_DTYPE = np.dtype([("holder", "<i8"), ("h", "<i8"), ("n", "<i8")], align=True)


def dring_dtype(nfs: int, nbs: int) -> np.dtype:
    """:data:`DRING_DTYPE_FIELDS` with the counter snapshots (``nfs`` frontend and ``nbs``
    backend counters)."""
    return np.dtype(DRING_DTYPE_FIELDS + [("fs0", "<i8", nfs), ("fs1", "<i8", nfs),
                                          ("bs0", "<i8", nbs), ("bs1", "<i8", nbs)],
                    align=True)


@kernel(forceinline=True)
def clip(a, b, w0, w1):
    """Length of ``[a, b]`` inside the window ``[w0, w1]`` (ns, as a float)."""
    lo = a if a > w0 else w0
    hi = b if b < w1 else w1
    return float(hi - lo) if hi > lo else 0.0


@kernel(forceinline=True)
def ns(x):
    """Round a cost (float ns) to integer virtual ns."""
    return np.int64(x + 0.5)


def new_state(sim: np.ndarray, streams: np.ndarray, nfs: int, nbs: int, job_cpu: np.ndarray,
              job_ring: np.ndarray, ring_irq_cpu: np.ndarray, ring_be_cpu: np.ndarray,
              qcap: int, pcpus: int = 0) -> dict:
    """Allocate the arrays of one run around its ``sim`` record (configured by the caller).

    ``pcpus`` > 0 puts every vCPU on a pool of that many physical CPUs; 0 gives each its own.
    Returns the arrays by name (see the module docstring).
    """
    s = sim[0]
    ncpu, jobs, rings, ents = int(s["ncpu"]), int(s["jobs"]), int(s["rings"]), \
        int(s["nr_ents"])
    maxio = int(s["maxio"])
    nlocks = int(s["nflocks"]) + rings  # the frontend's, then the backend's (one a ring)
    cap = ncpu + 8 * rings + 2 * rings * ents + jobs * (int(s["iodepth"]) + 2) + maxio + 64
    cpus = np.zeros(ncpu, CPU_DTYPE)
    cpus["cur"] = -1
    cpus["idle"] = 1
    cpus["last_tid"] = -1
    cpus["v_run"] = 0 if pcpus > 0 else 1
    cpus["v_due"] = -1
    cpus["v_left"] = -1
    jb = np.zeros(jobs, JOB_DTYPE)
    jb["cpu"] = job_cpu
    jb["ring"] = job_ring
    jb["slept"] = 1
    ios = np.zeros(maxio, IO_DTYPE)
    ios["next"] = np.arange(1, maxio + 1)  # the free list: tag 0 first
    ios["next"][-1] = -1
    s["io_free"] = 0
    s["pfree"] = pcpus
    drings = np.zeros(rings, dring_dtype(nfs, nbs))
    drings["irq_cpu"] = ring_irq_cpu
    drings["be_cpu"] = ring_be_cpu
    drings["be_slept"] = 1
    locks = np.zeros(nlocks, LOCK_DTYPE)
    locks["holder"] = -1
    from xbq.engines.des.heap import new_heap  # (heap.py imports this module)

    i64 = np.int64
    return dict(sim=sim, cpus=cpus, runq=np.zeros((ncpu, 2, qcap), i64), jobs=jb,
                pend=np.zeros((jobs, maxio), i64), streams=streams, ios=ios, drings=drings,
                done=np.zeros((rings, 2, ents), i64), locks=locks,
                lockq=np.zeros((nlocks, ncpu), i64), heap=new_heap(sim, cap),
                prq=np.zeros(ncpu, i64), dq=np.zeros(rings * ents, i64))
