"""The twin's state: one structured record array per lifetime, and its constants.

:class:`Twin` holds a run's arrays, by name, as kernels take them (one argument):

* ``cfg`` (:data:`CFG_DTYPE`, one record): what the run was asked for, never changed by it;
* ``run`` (:data:`RUN_DTYPE`, one record): the run's own state (the window, the drain, the
  error, the pCPU pool's and the device's queues, the free list of I/O tags) and its
  accumulators (measured in the window), with the latency histogram;
* ``evl`` and ``heap``: the event list (:mod:`xbq.engines.des.heap` owns them);
* ``cpus`` (:data:`CPU_DTYPE`, one per guest or dom0 vCPU), each with its two run queues;
* ``jobs`` (:data:`JOB_DTYPE`), ``streams`` (each job's random streams, then the device's);
* ``ios`` (:data:`IO_DTYPE`, one per I/O tag);
* ``drings`` (:func:`dring_dtype`, one per ring: its interrupt and backend thread, its
  queue's tags, the drivers' counters at the window's ends);
* ``slots`` (:data:`SLOT_DTYPE`, one per ring slot: a device completion waiting to run);
* ``done`` (:data:`xbq.blkif.blkfront.DONE_DTYPE`, per ring: what ``blkif_interrupt`` completed);
* ``locks`` (:data:`LOCK_DTYPE`).

Queues are intrusive, as the kernel's ``list_head``: a CPU's run queues link the tasks
(``task code`` = ``kind << TASK_SHIFT | actor``) through the ``rq_next`` of the job, ring or
slot record each task lives in; a lock's waiters, the pCPU pool's run queue, an open-loop
job's arrived I/Os and the device's FIFO link CPUs, CPUs, I/O tags and slots the same way.
No queue has a side array.

Event kinds, tasks, their phases and states, and error codes are named constants here;
frames and errors show their names (:data:`ERRORS`).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blkfront import DONE_DTYPE
from xbq.engines.des.heap import new_event_list
from xbq.workload.hist import NR_BUCKETS

NEVER = np.int64(1) << 62
#: The end of an intrusive list.
NIL = -1

# --- event kinds, named after the kernel paths they stand for --------------------------------
EV_STEP, EV_BLKIF_BE_INT, EV_XEN_BLKIF_SCHEDULE, EV_BLKIF_INTERRUPT, EV_END_IO, EV_ARRIVAL, \
    EV_THINK, EV_WARM, EV_END, EV_SLICE = range(10)
EVENT_NAMES = ("a CPU's next step", "blkback's upcall (xen_blkif_be_int)",
               "blkback's thread wakes (xen_blkif_schedule)",
               "blkfront's upcall (blkif_interrupt)", "the device completes (__end_block_io_op)",
               "an open loop's arrival", "a job's think time ends", "warm-up check",
               "end of the window", "a vCPU's pCPU slice ends")
# EV_STEP and EV_SLICE carry ``cpu | generation << GEN_SHIFT``: an event of an older
# generation was cancelled (its vCPU lost its pCPU) and is skipped.
GEN_SHIFT = 20
CPU_MASK = (1 << GEN_SHIFT) - 1


# --- tasks (a task code is kind << TASK_SHIFT | actor) and their phases -----------------------
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

# --- the states of jobs, interrupts and backend threads ---------------------------------------
#: A fio job: asleep (no work), on a run queue or running, asleep in ``blk_mq_get_tag``.
JOB_ASLEEP, JOB_RUNNABLE, JOB_TAG_WAIT = 0, 1, 2
#: A ring's interrupt: idle, queued on its vCPU, running.
IRQ_IDLE, IRQ_QUEUED, IRQ_RUNNING = 0, 1, 2
#: A ring's blkback thread: asleep in ``xen_blkif_schedule``, or woken (queued or running).
BE_ASLEEP, BE_AWAKE = 0, 1

# --- error codes (``run.err``) and the fault-injection hook -----------------------------------
ERR_NONE, ERR_HEAP_FULL, ERR_QUEUE, ERR_PROTOCOL, ERR_EVENT_LIMIT, ERR_TWO_STEPS, \
    ERR_DUPLICATE = range(7)
ERRORS = {ERR_HEAP_FULL: "the event heap is full",
          ERR_QUEUE: "blkif_queue_rq refused a request",
          ERR_PROTOCOL: "blkfront saw a protocol error",
          ERR_EVENT_LIMIT: "the event limit was reached",
          ERR_TWO_STEPS: "two pending steps on one CPU (an engine bug)",
          ERR_DUPLICATE: "a request completed more often than it was issued (duplicate "
                         "completion)"}
#: Test hook: drop or duplicate the completion of the ``inject_at``-th driver request.
INJECT_NONE, INJECT_DROP, INJECT_DUPLICATE = 0, 1, 2
INJECT = {"drop": INJECT_DROP, "duplicate": INJECT_DUPLICATE}

#: What the run was asked for: counts, the warm-up (``warm_min`` ns at least, until
#: ``warm_ios`` I/Os completed, at most ``warm_max``), the measured window (``duration``
#: ns), the drain after it (at most ``drain_max``), the event limit, the queue depth of a
#: ring's tags (0: jobs never sleep for one), the fault-injection hook.
CFG_DTYPE = np.dtype([
    ("sq", "<i8"), ("jobs", "<i8"), ("vcpus", "<i8"), ("ncpu", "<i8"), ("rings", "<i8"),
    ("nr_ents", "<i8"), ("iodepth", "<i8"), ("maxio", "<i8"), ("max_sectors", "<i8"),
    ("buf_pfn", "<i8"), ("open", "<i8"), ("ssd", "<i8"), ("channels", "<i8"),
    ("nflocks", "<i8"), ("belock", "<i8"), ("max_events", "<i8"), ("warm_min", "<i8"),
    ("warm_max", "<i8"), ("warm_ios", "<i8"), ("duration", "<i8"), ("drain_max", "<i8"),
    ("inject", "<i8"), ("inject_at", "<i8"), ("tag_depth", "<i8"),
], align=True)

#: The run's state and accumulators. State: the measured window ``[t_warm, t_end)`` (NEVER
#: until the warm-up ends), the drain, the error and the tag it concerns, the events
#: handled (to the end of the window), free pCPUs and the pCPU run
#: queue's ends, SSD channels busy and the device FIFO's ends, the I/O tags' free list, the
#: driver requests issued and not completed, I/Os submitted and completed (whole run).
#: Accumulators (the window): I/Os done, reads, writes, bytes, latency sum, the area under
#: the I/Os in flight, arrivals dropped, context switches, device busy time, the most
#: requests on one ring, driver requests completed and duplicated, the I/Os in flight when
#: the window closed, job sleeps for a free tag, the latency histogram.
RUN_DTYPE = np.dtype([
    ("t_warm", "<i8"), ("t_end", "<i8"), ("draining", "<i8"), ("err", "<i8"),
    ("err_tag", "<i8"), ("events", "<i8"), ("pfree", "<i8"),
    ("prq_head", "<i8"), ("prq_tail", "<i8"), ("dev_busy", "<i8"), ("dq_head", "<i8"),
    ("dq_tail", "<i8"), ("io_free", "<i8"), ("parts_out", "<i8"), ("submitted", "<i8"),
    ("completed", "<i8"), ("parts_done", "<i8"), ("dup", "<i8"), ("in_flight", "<i8"),
    ("dropped", "<i8"), ("ctx", "<i8"), ("tag_waits", "<i8"), ("max_occ", "<i8"),
    ("acc_done", "<f8"), ("acc_reads", "<f8"), ("acc_writes", "<f8"), ("acc_bytes", "<f8"),
    ("acc_lat_sum", "<f8"), ("acc_area", "<f8"), ("acc_dev_busy", "<f8"),
    ("hist", "<i8", NR_BUCKETS),
], align=True)

#: One guest or dom0 vCPU: the task it runs (a task code, -1 idle), the task's phase, idle,
#: when it went busy, began spinning and took its lock, the thread that ran last and the
#: start of its quantum, its high-priority run queue's ends (interrupts, device
#: completions) and its thread run queue's (fio jobs, blkback's threads), tasks started, the
#: next CPU waiting on the same lock and in the pCPU pool's run queue; on a pCPU pool,
#: whether it has a pCPU, its pending step (due time, or frozen time left), the generations
#: of that step and of its slice, since when it waits; since when it is idle; busy,
#: spinning, holding and steal time in the window (ns).
CPU_DTYPE = np.dtype([
    ("cur", "<i8"), ("phase", "<i8"), ("idle", "<i8"), ("busy_since", "<i8"),
    ("spin_since", "<i8"), ("hold_since", "<i8"), ("last_tid", "<i8"), ("slice_start", "<i8"),
    ("hi_head", "<i8"), ("hi_tail", "<i8"), ("lo_head", "<i8"), ("lo_tail", "<i8"),
    ("task_n", "<i8"), ("lock_next", "<i8"), ("prq_next", "<i8"),
    ("v_run", "<i8"), ("v_due", "<i8"), ("v_left", "<i8"), ("v_gen", "<i8"), ("v_rgen", "<i8"),
    ("v_wait_since", "<i8"), ("idle_since", "<i8"),
    ("busy", "<f8"), ("spin", "<f8"), ("hold", "<f8"), ("steal", "<f8"),
], align=True)

#: One fio job: its vCPU and ring, state (``JOB_*``), the I/O it is submitting, its
#: credits (I/Os it may start), its open-loop queue of arrived I/O tags (ends), whether its
#: thread slept since it last ran, the next task on its run queue.
JOB_DTYPE = np.dtype([
    ("vcpu", "<i8"), ("ring", "<i8"), ("state", "<i8"), ("tag", "<i8"), ("credits", "<i8"),
    ("pend_head", "<i8"), ("pend_tail", "<i8"), ("slept", "<i8"), ("rq_next", "<i8"),
], align=True)

#: One I/O tag: the I/O in flight under it (start, job, driver requests outstanding, write?,
#: first sector, sectors, in use, free-list link, the next arrived I/O of its job's open
#: loop) and the tag's issues and completions.
IO_DTYPE = np.dtype([
    ("start", "<i8"), ("job", "<i8"), ("parts", "<i8"), ("write", "<i8"), ("sector", "<i8"),
    ("nsect", "<i8"), ("inuse", "<i8"), ("next", "<i8"), ("pend_next", "<i8"),
    ("issued", "<i8"), ("completed", "<i8"),
], align=True)

#: One ring, as the twin drives it: the vCPUs its interrupt and backend thread run on, the
#: interrupt's state (``IRQ_*``), a second event arrived meanwhile, completions to finish,
#: the backend thread's state (``BE_*``) and "more work" flag, requests of its batch still
#: to take the shared lock, whether its thread slept, its queue's requests (blk-mq tags) in
#: use, the jobs asleep waiting for one and where the next wake-up scan starts, the next
#: task after its interrupt and after its thread on their run queues, since when its thread
#: sleeps, and the frontend's and backend's counters at the start and the end of the window.
DRING_DTYPE_FIELDS = [
    ("irq_vcpu", "<i8"), ("be_vcpu", "<i8"), ("irq_state", "<i8"), ("irq_again", "<i8"),
    ("irq_ndone", "<i8"), ("be_state", "<i8"), ("be_again", "<i8"), ("be_n", "<i8"),
    ("be_slept", "<i8"), ("tags", "<i8"), ("tag_wait", "<i8"), ("tag_rr", "<i8"),
    ("irq_next", "<i8"), ("be_next", "<i8"), ("be_sleep_since", "<i8"),
]

#: One slot of a ring (``ring * nr_ents + slot``): the device completion waiting in it for
#: its dom0 vCPU (the next task on that run queue), and the next request in the SSD's FIFO.
SLOT_DTYPE = np.dtype([("rq_next", "<i8"), ("dq_next", "<i8")], align=True)

#: One virtual spin lock: its holder (a CPU, -1 free), and its FIFO of spinning CPUs (ends,
#: length).
LOCK_DTYPE = np.dtype([("holder", "<i8"), ("head", "<i8"), ("tail", "<i8"), ("n", "<i8")],
                      align=True)

#: A run's arrays, by name (see the module docstring); kernels take it as one argument.
Twin = namedtuple("Twin", "cfg run evl heap cpus jobs ios streams drings slots done locks")
#: The I/O path the twin drives, by name: blkfront's arrays
#: (:data:`xbq.blkif.blkfront.Blkfront`), blkback's (:data:`xbq.blkif.blkback.Blkback`),
#: blk-mq's hardware queues (:data:`xbq.blkif.blk_mq.BlkMq`), the fio workload's record.
Io = namedtuple("Io", "fe be mq wl")


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


@kernel(forceinline=True)
def in_window(run, t):
    """``t`` lies in the measured window (and the run is not draining)."""
    return t >= run.t_warm and not run.draining


def new_twin(cfg: np.ndarray, streams: np.ndarray, nfs: int, nbs: int, job_vcpu: np.ndarray,
             job_ring: np.ndarray, ring_irq_vcpu: np.ndarray, ring_be_vcpu: np.ndarray,
             pcpus: int = 0) -> Twin:
    """Allocate a run's arrays around its configuration ``cfg`` (one :data:`CFG_DTYPE`
    record, filled by the caller).

    ``pcpus`` > 0 puts every vCPU on a pool of that many physical CPUs; 0 gives each its own.
    """
    c = cfg[0]
    ncpu, jobs, rings, ents = int(c["ncpu"]), int(c["jobs"]), int(c["rings"]), \
        int(c["nr_ents"])
    maxio = int(c["maxio"])
    nlocks = int(c["nflocks"]) + rings  # the frontend's, then the backend's (one a ring)
    cap = ncpu + 8 * rings + 2 * rings * ents + jobs * (int(c["iodepth"]) + 2) + maxio + 64
    run = np.zeros(1, RUN_DTYPE)
    r = run[0]
    r["t_warm"] = r["t_end"] = NEVER
    r["prq_head"] = r["prq_tail"] = r["dq_head"] = r["dq_tail"] = NIL
    r["io_free"] = 0
    r["pfree"] = pcpus
    cpus = np.zeros(ncpu, CPU_DTYPE)
    for f in ("cur", "last_tid", "hi_head", "hi_tail", "lo_head", "lo_tail", "lock_next",
              "prq_next"):
        cpus[f] = NIL
    cpus["idle"] = 1
    cpus["v_run"] = 0 if pcpus > 0 else 1
    cpus["v_due"] = -1
    cpus["v_left"] = -1
    jb = np.zeros(jobs, JOB_DTYPE)
    jb["vcpu"] = job_vcpu
    jb["ring"] = job_ring
    jb["slept"] = 1
    jb["pend_head"] = jb["pend_tail"] = jb["rq_next"] = NIL
    ios = np.zeros(maxio, IO_DTYPE)
    ios["next"] = np.arange(1, maxio + 1)  # the free list: tag 0 first
    ios["next"][-1] = NIL
    ios["pend_next"] = NIL
    drings = np.zeros(rings, dring_dtype(nfs, nbs))
    drings["irq_vcpu"] = ring_irq_vcpu
    drings["be_vcpu"] = ring_be_vcpu
    drings["be_slept"] = 1
    drings["irq_next"] = drings["be_next"] = NIL
    slots = np.full(rings * ents, NIL, dtype=SLOT_DTYPE)
    locks = np.zeros(nlocks, LOCK_DTYPE)
    locks["holder"] = locks["head"] = locks["tail"] = NIL
    evl, heap = new_event_list(cap)
    return Twin(cfg, run, evl, heap, cpus, jb, ios, streams, drings, slots,
                np.zeros((rings, ents), DONE_DTYPE), locks)
