"""Run one measured point of the native engine: handshake, threads, watchdog, checks, a row.

:func:`run_point` connects a blkfront/blkback pair through the real XenStore handshake
(:func:`xbq.blkif.pair.connect_pair`), builds the engine's records, places the jobs on the
guest's vCPUs, starts one OS thread per guest vCPU and one per dom0 vCPU that serves a ring
(each runs a ``nogil`` loop of :mod:`xbq.engines.native.loops`; pinned one to a host CPU when
the host has enough), and lets the Python main thread keep time and watch: it
moves the run through warm-up, the measured window and the drain, and aborts it (through
the shared stop word every loop checks) when no thread makes progress. After the drain it
checks that every driver request completed exactly once and, with the ramdisk, that the
disk holds exactly what was written; any violation raises :class:`xbq.errors.XbqError`.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from xbq._jit import first_compile
from xbq.blkif.blk_mq import BlkMq, blk_mq_map_queues, new_hw_queues
from xbq.blkif.blkback import BS_BATCHES, BS_NOTIFY, BS_REQUESTS, BS_RESPONSES
from xbq.blkif.blkfront import (
    BLKIF_STATE_CONNECTED,
    DONE_DTYPE,
    FS_INTERRUPTS,
    FS_NOTIFY,
    FS_REQUESTS,
    FS_RESPONSES,
    FS_RING_FULL,
)
from xbq.blkif.pair import connect_pair
from xbq.checks import check_seconds
from xbq.engines.native import loops as K
from xbq.engines.native.locks import (
    LK_ACQUIRED,
    LK_BLOCKS,
    LK_CONTENDED,
    LK_KICKS,
    LK_MAX_WAITERS,
    LK_WAIT_NS,
    LK_YIELDS,
    LOCK_WORDS,
    lock_kind,
    new_locks,
    new_mcs_nodes,
)
from xbq.engines.native.point import (
    DEFAULT_BACKEND_MAX_QUEUES,
    DEFAULT_DOM0_VCPUS,
    MAX_DURATION_S,
    MODES,
    NativePoint,
)
from xbq.errors import XbqError
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD, max_block_sectors, new_workload
from xbq.workload.hist import hist_mean, hist_quantiles, new_hist
from xbq.workload.placement import job_placement
from xbq.workload.rng import new_streams
from xbq.xen.abi import BLKFRONT_MAX_INDIRECT_SEGMENTS
from xbq.xen.ring import sring_header

DEV_NAME = "1.xvda"  # blkback names its ring threads "<domid>.<devname>-<ring>"


@dataclass(frozen=True)
class NativeConfig:
    """One measured point.

    Attributes
    ----------
    mode : {"sq", "mq"}
        ``sq``: one ring behind one ``io_lock``; ``mq``: ``queues`` rings, a ``ring_lock`` each.
    jobs, queues, vcpus, iodepth : int
        fio jobs, rings asked for in mq mode, guest vCPUs (threads), I/Os in flight per job.
    dom0_vcpus : int
        dom0 vCPUs; ring ``r`` is served by dom0 vCPU ``r % dom0_vcpus`` (one thread each
        that serves a ring).
    job_placement : bool
        False: job ``j`` on vCPU ``j % vcpus``; True: each job on a random vCPU.
    bssplit, rwmixread : str, float
        The fio workload (default: IOmeter file server, 80 % reads).
    device : {"null", "ramdisk"}
    ring_page_order : int
        blkfront's ``max_ring_page_order`` (blkback allows up to 4).
    lock : {"ticket", "ttas", "mcs", "pv"}
    duration_s, warmup_s : float
        Measured window and the warm-up before it (s).
    seed, rep : int
        Random streams come from ``SeedSequence([seed, rep])``, one per job.
    dev_sectors : int or None
        Device size in 512-byte sectors (None: 2**21 for null, 2**18 for the ramdisk).
    backend_max_queues : int
        blkback's ``max_queues``; asking for more queues is an error.
    stall_s : float
        The watchdog aborts after this long without progress (s).
    lock_timeout_s : float
        A lock waiter gives up after this long (s).
    spin : int
        Pause-spins of an idle vCPU before it halts.
    check : bool
        Test mode: assert in the engine that no interrupt runs on a vCPU holding a ring lock.
    pin : bool
        Pin each thread to its own host CPU when the host has enough.
    stall_ring, stall_after : int
        Test hook: the backend thread of ring ``stall_ring`` stops servicing after
        ``stall_after`` requests (-1: never).
    inject : tuple or None
        Test hook: ``("drop", k)`` or ``("duplicate", k)`` loses or repeats the completion of
        the k-th driver request the interrupt handlers see; ``("irq_in_lock", k)`` enters the
        interrupt path under the ring lock at the k-th submission (test mode catches it).
    """

    mode: str = "mq"
    jobs: int = 1
    queues: int = 4
    vcpus: int = 16
    dom0_vcpus: int = DEFAULT_DOM0_VCPUS
    job_placement: bool = False
    iodepth: int = 32
    bssplit: str = IOMETER_BSSPLIT
    rwmixread: float = IOMETER_RWMIXREAD
    device: str = "null"
    ring_page_order: int = 0
    lock: str = "ticket"
    duration_s: float = 2.0
    warmup_s: float = 0.5
    seed: int = 0
    rep: int = 0
    dev_sectors: int | None = None
    backend_max_queues: int = DEFAULT_BACKEND_MAX_QUEUES
    stall_s: float = 3.0
    lock_timeout_s: float = 10.0
    spin: int = 200
    check: bool = False
    pin: bool = True
    stall_ring: int = -1
    stall_after: int = 0
    inject: tuple | None = None
    extra: dict = field(default_factory=dict)


#: NativeConfig fields that are test hooks or bookkeeping, not part of what is measured.
_NOT_CONFIG = ("extra", "inject", "stall_ring", "stall_after", "stall_s", "lock_timeout_s",
               "check", "pin")


def point_of(cfg: NativeConfig) -> NativePoint:
    """The :class:`NativePoint` a configuration measures (checked; one line if bad)."""
    from dataclasses import fields

    return NativePoint(**{f.name: getattr(cfg, f.name) for f in fields(cfg)
                          if f.name not in _NOT_CONFIG})


def check_config(cfg: NativeConfig) -> None:
    """Refuse a bad point with a one-line :class:`XbqError` before anything is built."""
    point_of(cfg)
    check_seconds("the watchdog timeout", cfg.stall_s, MAX_DURATION_S)
    check_seconds("the lock timeout", cfg.lock_timeout_s, MAX_DURATION_S)


class _Point:
    """Everything one run builds (kept together so the watchdog can describe it)."""

    def __init__(self, cfg: NativeConfig):
        check_config(cfg)
        self.cfg = cfg
        J, D = cfg.jobs, cfg.iodepth
        data = cfg.device == "ramdisk"
        sectors = cfg.dev_sectors or (1 << 18 if data else 1 << 21)
        wl0 = new_workload(cfg.bssplit, cfg.rwmixread, sectors)  # validates the workload
        align = int(wl0["align"][0])
        max_bs = max_block_sectors(wl0)
        region = (sectors // J) // max(align, 8) * max(align, 8)
        if region < max_bs:
            raise XbqError(f"a {sectors}-sector device is too small for {J} jobs "
                           f"(each needs a region of at least {max_bs} sectors)")
        self.wl = new_workload(cfg.bssplit, cfg.rwmixread, region)
        slot_pages = -(-max_bs // 8)
        buffer_pages = J * D * slot_pages if data else slot_pages
        queues = cfg.queues if cfg.mode == "mq" else 1
        self.pair = connect_pair(
            queues, vcpus=cfg.vcpus, dom0_vcpus=cfg.backend_max_queues, sectors=sectors,
            backend_max_queues=cfg.backend_max_queues, ring_page_order=cfg.ring_page_order,
            max_indirect=BLKFRONT_MAX_INDIRECT_SEGMENTS, data_pages=buffer_pages,
            min_front_pages=1 << 15, device=cfg.device, touch_data=data)
        self.conn, self.fe, self.be = self.pair.conn, self.pair.front, self.pair.back
        self.vbd = self.be.vbd
        R = self.conn.nr_rings
        self.R, self.J, self.D = R, J, D
        maxs = self.fe.max_sectors
        maxp = -(-max_bs // maxs)
        self.hctx, self.dispatch = new_hw_queues(R, J * D * maxp)
        first_buf = self.pair.buf_pfn
        V = cfg.vcpus
        job_vcpu = job_placement(J, V, cfg.seed * 1_000_003 + cfg.rep,
                                 cfg.job_placement).astype(np.int64)
        if cfg.mode == "mq":
            qmap = blk_mq_map_queues(V, R)
            irq_vcpu = np.array([int(np.flatnonzero(qmap == q)[0]) for q in range(R)], np.int64)
        else:
            qmap = np.zeros(V, np.int64)
            irq_vcpu = np.zeros(1, np.int64)
        self.qmap, self.irq_vcpu, self.job_vcpu = qmap, irq_vcpu, job_vcpu
        self.V, self.Dt = V, min(cfg.dom0_vcpus, R)  # dom0 vCPUs with a ring to serve
        par = np.zeros(1, K.NATIVE_PARAMS_DTYPE)
        inject = {"drop": K.INJECT_DROP, "duplicate": K.INJECT_DUPLICATE,
                  "irq_in_lock": K.INJECT_IRQ_IN_LOCK}
        par[0] = (J, R, D, maxs, maxp, lock_kind(cfg.lock), int(cfg.lock_timeout_s * 1e9),
                  int(data), region, cfg.spin, cfg.stall_ring, cfg.stall_after,
                  inject[cfg.inject[0]] if cfg.inject else 0,
                  int(cfg.inject[1]) if cfg.inject else 0, V, self.Dt, cfg.dom0_vcpus,
                  self.conn.nr_ents, int(cfg.check), K.HALT_NS)
        if maxp > self.conn.nr_ents:
            raise XbqError(f"an I/O of {maxp} driver requests needs more tags than a queue "
                           f"has ({self.conn.nr_ents})")
        ss = np.random.SeedSequence([cfg.seed, cfg.rep])
        jobs = np.zeros(J, K.JOB_DTYPE)
        jobs["ring"] = qmap[job_vcpu]
        jobs["vcpu"] = job_vcpu
        jobs["region0"] = np.arange(J) * region
        jobs["stream"] = new_streams(int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1)), J)
        per_vcpu = np.bincount(job_vcpu, minlength=V)
        vjobs = np.full((V, max(int(per_vcpu.max()), 1)), -1, np.int64)
        for v in range(V):
            on = np.flatnonzero(job_vcpu == v)
            vjobs[v, :on.size] = on
        slots = np.zeros(J * D, K.SLOT_DTYPE)
        slots["state"] = K.SLOT_FREE
        slots["buf"] = (first_buf + np.arange(J * D) * slot_pages) if data \
            else first_buf  # the null device never touches data
        T = V + self.Dt
        ents = self.conn.nr_ents
        self.run = K.Native(
            ctl=np.zeros(K.N_CTL, np.int64), par=par, jobs=jobs, vjobs=vjobs,
            vst=np.zeros(T * K.VST_WORDS, np.int64),
            rtags=np.zeros(R * K.RTAG_WORDS, np.int64),
            tagq=np.zeros((R, 4 * J + 4), np.int64), irq_vcpu=irq_vcpu,
            cnt=np.zeros((T, K.CNT_WORDS), np.int64), slots=slots,
            tags=np.zeros(J * D * maxp, K.TAG_DTYPE), locks=new_locks(2 * R),
            mcs=new_mcs_nodes(V), hist=new_hist(V), done=np.zeros((V, ents), DONE_DTYPE),
            wseq=np.full(sectors if data else 1, K.WSEQ_NEVER, np.int64))
        self.ctl, self.cnt, self.tags = self.run.ctl, self.run.cnt, self.run.tags
        self.sectors, self.region, self.data = sectors, region, data
        self.host_cpus = sorted(os.sched_getaffinity(0))
        self.pinned = cfg.pin and T <= len(self.host_cpus)

    def vcpu_args(self, v: int) -> tuple:
        """The arguments of :func:`~xbq.engines.native.loops.vcpu_loop` for guest vCPU ``v``."""
        return v, self.fe.arrays(), BlkMq(self.hctx, self.dispatch), self.run, self.wl[0]

    def dom0_args(self, d: int) -> tuple:
        """The arguments of :func:`~xbq.engines.native.loops.dom0_loop` for dom0 vCPU ``d``."""
        return d, self.be.arrays(), self.run

    def dom0_rings(self, d: int) -> list[int]:
        return list(range(d, self.R, self.cfg.dom0_vcpus))

    # -- names and ring state for messages -------------------------------------------------

    def thread_name(self, t: int) -> str:
        if t < self.V:
            jobs = np.flatnonzero(self.job_vcpu == t)
            shown = ", ".join(map(str, jobs[:4])) + (" ..." if jobs.size > 4 else "")
            return f"vCPU {t} (jobs {shown or 'none'})"
        d = t - self.V
        names = ", ".join(f"{DEV_NAME}-{r}" for r in self.dom0_rings(d))
        return f"dom0 vCPU {d} (rings {names})"

    def ring_indices(self, r: int) -> dict[str, int]:
        hdr = sring_header(self.fe.sring(r))
        return {"req_prod": hdr["req_prod"], "req_cons": int(self.be.rings[r]["req_cons"]),
                "rsp_prod": hdr["rsp_prod"], "rsp_cons": int(self.fe.rinfo[r]["rsp_cons"]),
                "req_prod_pvt": int(self.fe.rinfo[r]["req_prod_pvt"])}

    def describe_ring(self, r: int) -> str:
        ix = self.ring_indices(r)
        return (f"ring {r}: req_prod={ix['req_prod']} req_cons={ix['req_cons']} "
                f"rsp_prod={ix['rsp_prod']} rsp_cons={ix['rsp_cons']}")

    def snapshot(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"t": time.perf_counter(), "cpu": ru.ru_utime + ru.ru_stime,
                "cnt": self.cnt.copy(), "fs": self.fe.rinfo["stats"].copy(),
                "bs": self.be.rings["stats"].copy(), "locks": self.run.locks.copy(),
                "parked": int(self.hctx["parked"].sum()),
                "ctx": ru.ru_nivcsw, "clock": K.clock_pair()}


# --- threads and the watchdog -------------------------------------------------------------------


def _thread_main(fn, args, t, errors, ctl, cpu):
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # this thread only (Linux)
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append((t, exc))
        if ctl[K.C_ABORT] == 0:
            ctl[K.C_ABORT_WHO] = t
            ctl[K.C_ABORT] = K.AB_PYTHON


#: Cold compile of both loops on 2 cores (s), quoted by the first-run notice.
COMPILE_S = 25


def _compile(pt: _Point) -> None:
    """Compile both loops in this thread (an aborted run returns at once), then reset."""
    pt.ctl[K.C_ABORT] = K.AB_PYTHON
    with first_compile("the native engine", K, COMPILE_S):
        K.vcpu_loop(*pt.vcpu_args(0))
        K.dom0_loop(*pt.dom0_args(0))
    pt.ctl[:] = 0


class _Watchdog:
    """Polls progress counters; decides when the run is stalled and who stalled it."""

    def __init__(self, pt: _Point):
        self.pt = pt
        now = time.monotonic()
        self.last = pt.cnt[:, K.CNT_PROGRESS].copy()
        self.since = np.full(self.last.size, now)
        self.global_since = now
        self.ring_cons = pt.be.rings["req_cons"].copy()
        self.ring_since = np.full(pt.R, now)

    def check(self) -> str | None:
        pt, cfg = self.pt, self.pt.cfg
        now = time.monotonic()
        prog = pt.cnt[:, K.CNT_PROGRESS].copy()
        moved = prog != self.last
        self.since[moved] = now
        if moved.any():
            self.global_since = now
        self.last = prog
        cons = pt.be.rings["req_cons"].copy()
        self.ring_since[cons != self.ring_cons] = now
        self.ring_cons = cons
        stalled = []
        quiet = now - self.since > cfg.stall_s
        for r in range(pt.R):  # requests waiting that the ring's dom0 vCPU does not consume
            t = pt.V + r % cfg.dom0_vcpus
            ix = pt.ring_indices(r)
            if ix["req_prod"] != ix["req_cons"] and \
                    now - self.ring_since[r] > cfg.stall_s:
                stalled.append(f"ring {r} ({DEV_NAME}-{r}) on {pt.thread_name(t)} with "
                               f"requests waiting [{pt.describe_ring(r)}]")
        for r in range(pt.R):  # responses nobody consumes: the ring's interrupt vCPU
            ix = pt.ring_indices(r)
            v = int(pt.irq_vcpu[r])
            if ix["rsp_prod"] != ix["rsp_cons"] and quiet[v]:
                stalled.append(f"the interrupt of ring {r} on {pt.thread_name(v)} "
                               f"[{pt.describe_ring(r)}]")
        if not stalled and now - self.global_since > cfg.stall_s:
            quiet = [pt.thread_name(t) for t in np.flatnonzero(quiet)]
            rings = "; ".join(pt.describe_ring(r) for r in range(pt.R))
            more = " ..." if len(quiet) > 8 else ""
            stalled.append(f"every thread ({', '.join(quiet[:8])}{more}) [{rings}]")
        if stalled:
            return (f"watchdog: no progress for {cfg.stall_s:g} s; stalled: "
                    + "; ".join(stalled))
        return None


def _abort_message(pt: _Point) -> str:
    ctl = pt.ctl
    reason, who = int(ctl[K.C_ABORT]), int(ctl[K.C_ABORT_WHO])
    arg, arg2 = int(ctl[K.C_ABORT_ARG]), int(ctl[K.C_ABORT_ARG2])
    name = pt.thread_name(who) if 0 <= who < pt.V + pt.Dt else f"thread {who}"
    if reason == K.AB_LOCK:
        which = "of the tag wait list of queue" if arg2 >= 2 else "of ring"
        return (f"{name} gave up waiting for the {pt.cfg.lock} lock {which} {arg} after "
                f"{pt.cfg.lock_timeout_s:g} s (lock wait timed out)")
    if reason == K.AB_TAGQ:
        return f"{name}: the tag wait list of queue {arg} overflowed (job {arg2})"
    if reason == K.AB_PROTOCOL:
        return f"{name}: blkif_interrupt found a protocol error on {pt.describe_ring(arg)}"
    if reason == K.AB_STATUS:
        return f"{name}: request tag {arg} completed with status {arg2} (not BLKIF_RSP_OKAY)"
    if reason == K.AB_DUPLICATE:
        return f"{name}: request tag {arg} completed twice (ring {arg2})"
    if reason == K.AB_BAD_TAG:
        return f"{name}: a completion carried unknown tag {arg} (ring {arg2})"
    if reason == K.AB_QUEUE:
        return f"{name}: blkif_queue_request refused a request on ring {arg} (code {arg2})"
    if reason == K.AB_HALTED:
        return f"{name}: blkback halted {pt.describe_ring(arg)} (bogus producer index)"
    if reason == K.AB_IRQ_IN_LOCK:
        return (f"{name}: the interrupt of ring {arg} ran while this vCPU held the lock of "
                f"ring {arg2} (test mode)")
    if reason == K.AB_DATA:
        what = "reads as zeros after a write completed" if arg2 < 0 else f"word {arg2} differs"
        return f"{name}: ramdisk data check failed at sector {arg}: {what}"
    return f"{name}: run aborted ({K.AB_NAMES.get(reason, reason)})"


def _run_threads(pt: _Point) -> tuple[dict, dict, float]:
    """Start the threads, time the phases, watch; return the window's two snapshots."""
    cfg, ctl = pt.cfg, pt.ctl
    errors: list = []
    threads = []
    cpus = pt.host_cpus if pt.pinned else [None] * (pt.V + pt.Dt)
    for d in range(pt.Dt):
        t = pt.V + d
        threads.append(threading.Thread(
            target=_thread_main, name=f"dom0-vcpu{d}", daemon=True,
            args=(K.dom0_loop, pt.dom0_args(d), t, errors, ctl, cpus[t])))
    for v in range(pt.V):
        threads.append(threading.Thread(
            target=_thread_main, name=f"vcpu{v}", daemon=True,
            args=(K.vcpu_loop, pt.vcpu_args(v), v, errors, ctl, cpus[v])))
    dog = _Watchdog(pt)
    poll = min(0.02, cfg.stall_s / 10)
    failure = None

    def wait(seconds, until=None):
        nonlocal failure
        end = time.monotonic() + seconds
        while failure is None and ctl[K.C_ABORT] == 0:
            if until is not None and until():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return until is None
            time.sleep(min(poll, left))
            failure = dog.check()
        return False

    t_start = time.perf_counter()
    for th in threads:
        th.start()
    s0 = s1 = None
    draining = False
    try:
        wait(cfg.warmup_s)
        s0 = pt.snapshot()
        ctl[K.C_PHASE] = K.PHASE_MEASURE
        wait(cfg.duration_s)
        ctl[K.C_PHASE] = K.PHASE_DRAIN
        draining = failure is None  # a stall found later is a stall of the drain
        s1 = pt.snapshot()
        guest = threads[pt.Dt:]
        wait(3600.0, until=lambda: not any(th.is_alive() for th in guest))
    finally:
        if failure is not None and ctl[K.C_ABORT] == 0:
            ctl[K.C_ABORT] = K.AB_WATCHDOG
        ctl[K.C_PHASE] = K.PHASE_EXIT
        for th in threads:
            th.join(timeout=max(10.0, 2 * cfg.lock_timeout_s))
    alive = [th.name for th in threads if th.is_alive()]
    lost = np.maximum(pt.tags["issued"] - pt.tags["completed"], 0)
    if failure is not None and draining and lost.any() and ctl[K.C_ABORT] in (
            0, K.AB_WATCHDOG):
        raise XbqError(f"{int(lost.sum())} request(s) lost: issued but never completed "
                       f"(the drain made no progress for {cfg.stall_s:g} s; first: tag "
                       f"{int(np.flatnonzero(lost)[0])})")
    if failure is not None:
        raise XbqError(failure)
    if errors:
        t, exc = errors[0]
        raise XbqError(f"{pt.thread_name(t)} raised {type(exc).__name__}: {exc}")
    if ctl[K.C_ABORT] != 0:
        raise XbqError(_abort_message(pt))
    if alive:
        raise XbqError(f"thread(s) {', '.join(alive)} did not stop")
    return s0, s1, time.perf_counter() - t_start


# --- checks after the drain -----------------------------------------------------------------


def _check_exactly_once(pt: _Point) -> tuple[int, int, int, int]:
    issued, completed = pt.tags["issued"], pt.tags["completed"]
    lost = np.maximum(issued - completed, 0)
    dup = int(pt.ctl[K.C_DUPS]) + int(np.maximum(completed - issued, 0).sum())
    if lost.any():
        first = int(np.flatnonzero(lost)[0])
        rings = "; ".join(pt.describe_ring(r) for r in range(pt.R))
        raise XbqError(f"{int(lost.sum())} request(s) lost: issued but never completed "
                       f"(first: tag {first}; {rings})")
    if dup:
        raise XbqError(f"{dup} duplicate completion(s)")
    if pt.fe.connected != BLKIF_STATE_CONNECTED:
        raise XbqError("blkfront left the connected state (a protocol error)")
    for r in range(pt.R):
        ix = pt.ring_indices(r)
        if len({ix["req_prod"], ix["req_cons"], ix["rsp_prod"], ix["rsp_cons"],
                ix["req_prod_pvt"]}) != 1:
            raise XbqError(f"ring indices disagree after the drain: {pt.describe_ring(r)}")
    return int(issued.sum()), int(completed.sum()), int(lost.sum()), dup


def _check_disk(pt: _Point) -> None:
    """Every sector a completed write touched holds its pattern; every other sector is zero."""
    disk = pt.vbd.disk.view(np.uint64).reshape(pt.sectors, 64)
    k = np.arange(64, dtype=np.uint64)
    for j in range(pt.J):
        lo, hi = j * pt.region, (j + 1) * pt.region
        written = pt.run.wseq[lo:hi] != K.WSEQ_NEVER
        s = np.arange(lo, hi, dtype=np.uint64)[written]
        want = (np.uint64(j + 1) << np.uint64(56)) | (s[:, None] << np.uint64(8)) | k[None, :]
        got = disk[lo:hi][written]
        bad = np.flatnonzero((got != want).any(axis=1))
        if bad.size:
            raise XbqError(f"ramdisk data check failed: job {j} sector {int(s[bad[0]])} "
                           "does not hold what was written")
        if disk[lo:hi][~written].any():
            sec = lo + int(np.flatnonzero(disk[lo:hi][~written].any(axis=1))[0])
            raise XbqError(f"ramdisk data check failed: job {j} has data in a sector it never "
                           f"wrote (index {sec - lo} of the unwritten ones)")
    rest = disk[pt.J * pt.region:]
    if rest.any():
        raise XbqError("ramdisk data check failed: data outside every job's region")


# --- the row ------------------------------------------------------------------------------------


def _row(pt: _Point, s0: dict, s1: dict, elapsed: float, acct) -> dict:
    cfg = pt.cfg
    dt = s1["t"] - s0["t"]
    per = s1["cnt"] - s0["cnt"]
    cnt = per.sum(axis=0)
    guest, dom0 = per[:pt.V].sum(axis=0), per[pt.V:].sum(axis=0)
    fs = (s1["fs"] - s0["fs"]).sum(axis=0)
    bs = (s1["bs"] - s0["bs"]).sum(axis=0)
    n = pt.R * LOCK_WORDS  # the ring locks (then the tag wait lists' locks)
    lk = (s1["locks"][:n] - s0["locks"][:n]).reshape(pt.R, LOCK_WORDS)
    lk_max = s1["locks"][:n].reshape(pt.R, LOCK_WORDS)[:, LK_MAX_WAITERS].max()
    ios = int(cnt[K.CNT_READS] + cnt[K.CNT_WRITES])
    cpu = s1["cpu"] - s0["cpu"]
    q50, q99, q999 = hist_quantiles(pt.run.hist, [0.5, 0.99, 0.999]) / 1e3
    acquired = int(lk[:, LK_ACQUIRED].sum())
    contended = int(lk[:, LK_CONTENDED].sum())
    submitted, completed, lost, dup = acct
    return {
        "engine": "native", "mode": cfg.mode, "jobs": cfg.jobs, "queues": pt.R,
        "vcpus": cfg.vcpus, "iodepth": cfg.iodepth, "rep": cfg.rep, "seed": cfg.seed,
        "duration_s": dt, "iops": ios / dt, "read_iops": int(cnt[K.CNT_READS]) / dt,
        "write_iops": int(cnt[K.CNT_WRITES]) / dt, "mbps": int(cnt[K.CNT_BYTES]) / dt / 1e6,
        "lat_mean_us": hist_mean(pt.run.hist) / 1e3, "lat_p50_us": q50, "lat_p99_us": q99,
        "lat_p999_us": q999, "submitted": submitted, "completed": completed, "lost": lost,
        "duplicated": dup,
        "notify_fe_per_req": fs[FS_NOTIFY] / max(fs[FS_REQUESTS], 1),
        "notify_be_per_req": bs[BS_NOTIFY] / max(bs[BS_RESPONSES], 1),
        "ring_full": int(fs[FS_RING_FULL]),
        # native extras
        "device": cfg.device, "lock": cfg.lock, "ring_page_order": cfg.ring_page_order,
        "nr_ents": pt.conn.nr_ents, "bssplit": cfg.bssplit, "rwmixread": cfg.rwmixread,
        "requests": int(fs[FS_REQUESTS]), "max_sectors": pt.fe.max_sectors,
        "parked": s1["parked"] - s0["parked"],
        "lock_acquired": acquired, "lock_contended": contended,
        "lock_contended_frac": contended / max(acquired, 1),
        "lock_wait_us_per_acq": lk[:, LK_WAIT_NS].sum() / max(acquired, 1) / 1e3,
        "lock_max_waiters": int(lk_max), "lock_yields": int(lk[:, LK_YIELDS].sum()),
        "responses_per_irq": fs[FS_RESPONSES] / max(fs[FS_INTERRUPTS], 1),
        "requests_per_be_batch": bs[BS_REQUESTS] / max(bs[BS_BATCHES], 1),
        "cpu_s": cpu, "cpu_util": cpu / dt, "cpu_us_per_io": cpu / max(ios, 1) * 1e6,
        "lock_blocks": int(lk[:, LK_BLOCKS].sum()), "lock_kicks": int(lk[:, LK_KICKS].sum()),
        **_vcpu_columns(pt, guest, dom0, dt, max(int(fs[FS_REQUESTS]), 1), max(ios, 1),
                        _ns_per_cycle(s0["clock"], s1["clock"]),
                        float((s1["locks"] - s0["locks"]).reshape(-1, LOCK_WORDS)[:, LK_WAIT_NS]
                              .sum())),
        "threads": pt.V + pt.Dt, "host_cpus": len(pt.host_cpus),
        "oversubscribed": pt.V + pt.Dt > len(pt.host_cpus), "pinned": pt.pinned,
        "host_ctx_switches": s1["ctx"] - s0["ctx"], "usable_cpus": len(pt.host_cpus),
        "data_verified": pt.data, "elapsed_s": elapsed,
    }


def _ns_per_cycle(c0, c1) -> float:
    """Nanoseconds per :func:`~xbq.xen.atomic.cpu_cycles` tick over the window."""
    return (c1[0] - c0[0]) / max(c1[1] - c0[1], 1)


def _vcpu_columns(pt: _Point, guest, dom0, dt: float, requests: int, ios: int,
                  ns_per_cycle: float, spin_ns: float) -> dict:
    """Where the vCPUs' time went, named as the twin names it (fractions of the window), and
    the scheduling events per driver request or I/O."""
    wg, wd = pt.V * dt * 1e9, pt.cfg.dom0_vcpus * dt * 1e9
    guest, dom0 = guest.astype(float), dom0.astype(float)
    for t in (K.T_SUBMIT, K.T_IRQ, K.T_HOLD, K.T_HALT, K.T_BACKEND):
        guest[t] *= ns_per_cycle  # the time accounts are in cpu_cycles
        dom0[t] *= ns_per_cycle
    return {
        "util_vcpu_busy": (guest[K.T_SUBMIT] + guest[K.T_IRQ]) / wg,
        "util_vcpu_spin": spin_ns / wg, "util_vcpu_hold": guest[K.T_HOLD] / wg,
        "util_vcpu_halted": guest[K.T_HALT] / wg,
        "util_dom0_busy": dom0[K.T_BACKEND] / wd, "util_dom0_spin": 0.0,
        "util_dom0_hold": 0.0, "util_dom0_halted": dom0[K.T_HALT] / wd,
        "irq_per_req": guest[K.CNT_IRQS] / requests,
        "ctx_per_req": guest[K.CNT_SWITCHES] / requests,
        "tag_wait_per_req": guest[K.CNT_TAG_WAITS] / ios,
        "io_wait_per_req": guest[K.CNT_IO_WAITS] / ios,
        "vcpu_halts": int(guest[K.CNT_HALTS]), "dom0_halts": int(dom0[K.CNT_HALTS]),
        "vcpu_kicks": int(guest[K.CNT_KICKS] + dom0[K.CNT_KICKS]),
    }


def run_point(cfg: NativeConfig) -> dict:
    """Measure one point; return its row (the :data:`xbq.engines.schema.COLUMNS` plus extras).

    Raises
    ------
    XbqError
        Bad configuration, a failed handshake, a stalled run (watchdog), a lock timeout, a
        protocol error, a lost or duplicated request, or a ramdisk data mismatch.
    """
    pt = _Point(cfg)
    _compile(pt)
    s0, s1, elapsed = _run_threads(pt)
    acct = _check_exactly_once(pt)
    if pt.data:
        _check_disk(pt)
    return point_of(cfg).stamp(_row(pt, s0, s1, elapsed, acct))


__all__ = ["NativeConfig", "run_point", "check_config", "blk_mq_map_queues", "MODES"]
