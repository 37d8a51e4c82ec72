"""The native engine: the blkif protocol run by real OS threads on the machine at hand.

A guest of ``vcpus`` vCPU threads (each runs the fio-like jobs placed on it and the ring
interrupts bound to it, and halts when idle) and dom0 vCPU threads (the rings'
``xen_blkif_schedule`` loops) execute ``nogil`` numba loops
(:mod:`xbq.engines.native.loops`) over the very blkfront/blkback code of
:mod:`xbq.blkif.blkfront` and :mod:`xbq.blkif.blkback`, synchronised only by the protocol's
atomics, blk-mq's tags and the frontend lock of the driver being measured
(:mod:`xbq.engines.native.locks`): one ``io_lock`` in ``sq`` mode, a ``ring_lock`` per ring
in ``mq`` mode. See ``docs/native.md``.

Public API: :func:`measure` (a tidy frame in the :mod:`xbq.engines.schema` schema,
``engine="native"``); :func:`points` and :func:`measure_point` (a checked
:class:`~xbq.engines.native.point.NativePoint` each, and its row), which
:func:`xbq.study.results.run_points` runs into a results store.
"""

from __future__ import annotations

from xbq.engines.schema import to_frame
from xbq.errors import XbqError
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD

WORKLOADS = {"iometer": (IOMETER_BSSPLIT, IOMETER_RWMIXREAD)}

__all__ = ["measure", "measure_point", "points", "WORKLOADS"]


def _as_list(value, name):
    values = [value] if isinstance(value, (int, str)) else list(value)
    if not values:
        raise XbqError(f"{name} must not be empty")
    return values


def points(mode="mq", jobs=(1, 4, 8), queues=4, vcpus=16, iodepth=32, workload="iometer",
           device="null", ring_page_order=0, lock="ticket", duration=2.0, warmup=0.5, reps=1,
           seed=0, *, bssplit=None, rwmixread=None, dev_sectors=None,
           backend_max_queues=16, dom0_vcpus=16, job_placement=False) -> list:
    """The :class:`~xbq.engines.native.point.NativePoint` of every (rep, jobs, mode), checked.

    Points run repetition by repetition, and within one, job count by job count with the
    modes side by side, so that a change in what else runs on the machine hits every series
    alike instead of biasing the one measured last. Arguments as :func:`measure`'s.
    """
    from xbq.engines.native.point import NativePoint

    modes = _as_list(mode, "mode")
    job_list = _as_list(jobs, "jobs")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise XbqError(f"reps must be an integer >= 1, not {reps!r}")
    if workload in WORKLOADS:
        ws, wr = WORKLOADS[workload]
    elif isinstance(workload, str) and "/" in workload:
        ws, wr = workload, IOMETER_RWMIXREAD
    else:
        raise XbqError(f"unknown workload {workload!r}; use 'iometer' or a fio bssplit")
    ws = bssplit if bssplit is not None else ws
    wr = rwmixread if rwmixread is not None else wr
    return [NativePoint(mode=m, jobs=j, queues=queues, vcpus=vcpus, dom0_vcpus=dom0_vcpus,
                        job_placement=job_placement, iodepth=iodepth,
                        bssplit=ws, rwmixread=wr, device=device,
                        ring_page_order=ring_page_order, lock=lock, duration_s=duration,
                        warmup_s=warmup, seed=seed, rep=rep, dev_sectors=dev_sectors,
                        backend_max_queues=backend_max_queues)
            for rep in range(reps) for j in job_list for m in modes]


def measure_point(point, *, stall_s: float = 3.0, lock_timeout_s: float = 10.0) -> dict:
    """Measure one :class:`~xbq.engines.native.point.NativePoint`; return its row.

    ``stall_s`` and ``lock_timeout_s`` are the watchdog's and a lock waiter's limits (s).
    """
    from xbq.engines.native.runner import NativeConfig, run_point

    return run_point(NativeConfig(**point.model_dump(exclude={"engine"}), stall_s=stall_s,
                                  lock_timeout_s=lock_timeout_s))


def measure(mode="mq", jobs=(1, 4, 8), queues=16, vcpus=16, iodepth=64, workload="iometer",
            device="null", ring_page_order=0, lock="ticket", duration=2.0, warmup=0.5, reps=1,
            seed=0, *, bssplit=None, rwmixread=None, dev_sectors=None,
            backend_max_queues=16, dom0_vcpus=16, job_placement=False, stall_s=3.0,
            lock_timeout_s=10.0, progress=None):
    """Measure IOPS of blkfront/blkback on real threads; one row per (mode, jobs, rep).

    Parameters
    ----------
    mode : {"sq", "mq"} or list of them
        ``sq``: one ring and one ``io_lock`` shared by submit and completion (legacy
        blkfront); ``mq``: ``queues`` rings with a ``ring_lock`` each (blk-mq blkfront).
    jobs : int or list of int
        fio jobs (tasks the vCPUs run); each is a point.
    queues : int
        Rings in mq mode (at most ``vcpus`` and ``backend_max_queues``). The defaults of
        ``queues``, ``vcpus`` and ``iodepth`` are the twin's
        (:data:`xbq.engines.schema.GUEST_DEFAULTS`: the 2015 guest and fio's IOmeter job).
    vcpus : int
        Guest vCPUs, one thread each: a job runs on its vCPU and submits on blk-mq's queue
        for it.
    iodepth : int
        I/Os each job keeps in flight.
    workload : str
        ``"iometer"`` (fio's IOmeter file-server mix) or a fio ``bssplit`` string.
    device : {"null", "ramdisk"}
        The ramdisk moves data through the grants and is verified at the end.
    ring_page_order : int
        blkfront's ``max_ring_page_order`` (0: 32-slot rings, up to 4: 512 slots).
    lock : {"ticket", "ttas", "mcs", "pv"}
        The spinlock behind ``io_lock`` / ``ring_lock`` (pv: Xen's paravirtual ticket lock).
    duration, warmup : float
        Measured window and warm-up before it, in seconds.
    reps : int
        Repetitions of each point (seeded ``SeedSequence([seed, rep])``).
    seed : int
    bssplit, rwmixread : optional
        Override the workload's block-size split / read percentage.
    dev_sectors, backend_max_queues, stall_s, lock_timeout_s :
        Device size (512-byte sectors), blkback's ``max_queues``, watchdog and lock timeouts (s).
    dom0_vcpus : int
        dom0 vCPUs running the rings' backends (ring ``r`` on ``r % dom0_vcpus``).
    job_placement : bool
        False: job ``j`` on vCPU ``j % vcpus``; True: each job on a random vCPU.
    progress : callable, optional
        Called with each row as it is measured.

    To store each point as it is measured and resume an interrupted run, give
    :func:`points` and :func:`measure_point` to :func:`xbq.study.results.run_points`.

    Returns
    -------
    pandas.DataFrame
        The :data:`xbq.engines.schema.COLUMNS` then native extras: lock statistics, where the
        vCPUs' time went (``util_vcpu_*``, ``util_dom0_*``, as the twin names them), halts,
        kicks, tag waits, threads and host CPUs, CPU time, ...

    Raises
    ------
    XbqError
        Bad arguments (one line), a stalled run, a lock timeout, a lost or duplicated request,
        a data mismatch.
    """
    from xbq.checks import check_seconds
    from xbq.engines.native.point import MAX_DURATION_S

    pts = points(mode, jobs, queues, vcpus, iodepth, workload, device, ring_page_order, lock,
                 duration, warmup, reps, seed, bssplit=bssplit, rwmixread=rwmixread,
                 dev_sectors=dev_sectors, backend_max_queues=backend_max_queues,
                 dom0_vcpus=dom0_vcpus, job_placement=job_placement)
    check_seconds("the watchdog timeout", stall_s, MAX_DURATION_S)
    check_seconds("the lock timeout", lock_timeout_s, MAX_DURATION_S)
    rows = []
    for p in pts:
        rows.append(measure_point(p, stall_s=stall_s, lock_timeout_s=lock_timeout_s))
        if progress is not None:
            progress(rows[-1])
    return to_frame(rows)
