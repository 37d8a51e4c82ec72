"""``simulate``: run the discrete-event twin for one or more points and return a tidy frame.

The frame has the common :data:`xbq.engines.schema.COLUMNS` (``engine="des"``) followed by where the
time went, all measured over the window after the warm-up:

* ``util_vcpu_busy`` / ``util_vcpu_spin`` / ``util_vcpu_hold``: fraction of guest vCPU time
  running anything / spinning on a driver lock / holding one;
* ``util_dom0_busy`` / ``util_dom0_spin`` / ``util_dom0_hold``: the same for dom0's vCPUs
  (backend threads and completions; spin/hold concern the shared backend lock);
* ``util_vcpu_steal`` / ``util_dom0_steal``: with a pCPU pool (``pcpus`` > 0), the fraction
  of vCPU time runnable but waiting for a physical CPU (Xen's "steal" time; included in
  busy and spin); ``util_pcpu``: the pool's utilisation (NaN without a pool);
* ``util_device``: SSD channels busy (fraction), or for the null device the mean number of
  requests inside it;
* ``batch_mean``: requests per ``__do_block_io_op`` pass that found work; ``irq_per_req``,
  ``ctx_per_req``, ``parked_per_req`` (requests that found their ring full or stopped),
  ``tag_wait_per_req`` (with ``tag_wait``: times a job slept for a free request, per I/O);
* ``little_L`` (time-average I/Os in the system) and ``little_XW`` (throughput x mean
  latency), which Little's law says must agree; ``max_ring_occupancy`` (most requests ever
  outstanding on one ring) next to ``ring_size``; ``warmup_s`` (when the window began),
  ``events``, ``wall_s``;
* with jobs placed at random (``job_placement=1``) every measured rate and fraction is the
  weighted mean over the point's placements (:mod:`xbq.workload.placement`; counts of
  requests and events, and ``wall_s``, are summed over them), ``iops_se`` the standard error of
  its IOPS (0 for pinned jobs) and ``placement_left_out`` the probability of the placements
  the stratified plan gave no draw (a bias ``iops_se`` does not include).

After the window the twin drains, as the native engine does: no job starts another I/O, the
ones in flight complete, and every driver request is accounted for by its tag (issued vs
completed), so ``lost`` and ``duplicated`` are counts, not zeros by construction; a run that
loses or duplicates a request raises :class:`~xbq.errors.XbqError`. The drain happens in
virtual time after the window and changes no measured column (``in_flight_end`` counts the
I/Os in flight when the window closed; ``completed`` counts the whole run, drain included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from xbq._jit import first_compile
from xbq.blkif.blk_mq import BlkMq, blk_mq_map_queues, new_hw_queues
from xbq.blkif.blkback import BLKBACK_STATS
from xbq.blkif.blkfront import BLKFRONT_STATS
from xbq.blkif.pair import blkif_pair, connect_pair
from xbq.checks import MAX_JOBS, check_ints
from xbq.engines.des import loop as des_loop
from xbq.engines.des import state as S
from xbq.engines.des.loop import run
from xbq.engines.des.params import DesParams
from xbq.engines.des.point import DesPoint
from xbq.engines.schema import to_frame
from xbq.errors import XbqError
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD, max_block_sectors, new_workload
from xbq.workload.hist import hist_quantiles
from xbq.workload.placement import job_placement, left_out, placement_plan, stratified_se
from xbq.workload.rng import new_streams

#: Device size seen by the workload (512-byte sectors): 4 GiB, fio's ``size=4g``.
DEV_SECTORS = 8 << 20
#: Guest pages reserved as the (never touched) data buffer of every request.
BUF_PAGES = 64
#: Closed loop: the warm-up lasts until every job's I/Os have cycled this many times
#: (``WARMUP_CYCLES * jobs * iodepth`` completions), so the start-up burst has drained.
WARMUP_CYCLES = 3
#: ... but never more than this many virtual seconds past the minimum warm-up.
WARMUP_MAX_S = 5.0
#: The drain after the window lasts at most this long (virtual s); what is still in flight
#: then is lost.
DRAIN_MAX_S = 10.0
#: Cold compile of the twin's kernels on 2 cores (s), quoted by the first-run notice.
COMPILE_S = 35
_FS = {n: i for i, n in enumerate(BLKFRONT_STATS)}
_BS = {n: i for i, n in enumerate(BLKBACK_STATS)}


#: Legacy block layer's requests per queue (``BLKDEV_MAX_RQ``, ``q->nr_requests``).
LEGACY_NR_REQUESTS = 128


def _tag_depth(mode: str, ents: int) -> int:
    """Requests a queue can hold before a submitter sleeps: blk-mq's tags are the ring's
    slots (blkfront sets ``tag_set.queue_depth`` to the ring size); the legacy queue of
    ``sq`` has ``nr_requests``."""
    return LEGACY_NR_REQUESTS if mode == "sq" else ents


def _point(pt: DesPoint, max_events=0, inject=None, quiet=False) -> dict:
    """One row: the point run once, or, with random placements, once per placement and
    averaged (:func:`_mean_of`)."""
    p = pt.params
    if p.job_placement:
        plan = placement_plan(pt.jobs, pt.vcpus, pt.seed, p.placements)
    else:
        plan = [(0, 1.0, job_placement(pt.jobs, pt.vcpus, pt.seed, False))]
    pair = _pair(pt)
    if len(plan) > 1:
        pair.save()
    runs = []
    for i, (_, _, v) in enumerate(plan):
        if i:
            pair.restore()  # the next placement starts from the connected device again
        runs.append(_run(pt, pair, v, max_events, inject, quiet))
    strata, weights, _ = zip(*plan, strict=True)
    row = runs[0] if len(runs) == 1 else _mean_of(runs, weights)
    row["iops_se"] = stratified_se(strata, weights, [r["iops"] for r in runs])
    row["placement_left_out"] = left_out(pt.jobs, pt.vcpus, p.placements) \
        if p.job_placement else 0.0
    row["rep"] = pt.rep
    return pt.stamp(row)


#: Columns of a point's runs (placements) summed, or their largest, instead of averaged:
#: counts of the runs' requests and events, and their wall time.
_SUMMED = ("submitted", "completed", "lost", "duplicated", "ring_full", "in_flight_end",
           "dropped", "events", "wall_s")
_LARGEST = ("max_ring_occupancy",)


def _mean_of(runs: list[dict], weights) -> dict:
    """One point's runs on several placements as one row: measured rates and fractions their
    weighted mean (latency percentiles the mean of each run's), counts of requests and events
    and the wall time summed over the runs, the ring occupancy the largest, the point's
    settings from the first run."""
    row = dict(runs[0])
    for col, v in runs[0].items():
        vals = [r[col] for r in runs]
        if col in _SUMMED:
            row[col] = type(v)(sum(vals))
        elif col in _LARGEST:
            row[col] = max(vals)
        elif isinstance(v, float):
            # math.fsum, not np.dot: BLAS sums in an order of its CPU kernel's choosing, so
            # the last bits of the mean would differ between machines
            row[col] = math.fsum(w * x for w, x in zip(weights, vals, strict=True))
    return row


def _pair(pt: DesPoint) -> blkif_pair:
    """The point's device: its rings through the real handshake, the twin's data buffer
    (never touched: the twin moves no data)."""
    p = pt.params
    return connect_pair(pt.rings, vcpus=pt.vcpus, dom0_vcpus=p.dom0_vcpus, sectors=DEV_SECTORS,
                        ring_page_order=p.ring_page_order, persistent=p.persistent,
                        max_indirect=p.max_indirect, data_pages=BUF_PAGES, device="null",
                        touch_data=False, defer=True)


def _run(pt: DesPoint, pair: blkif_pair, job_vcpu, max_events, inject, quiet) -> dict:
    """Simulate one point on its connected ``pair`` with the jobs on the vCPUs ``job_vcpu``."""
    p = pt.params
    mode, jobs, vcpus, iodepth, seed = pt.mode, pt.jobs, pt.vcpus, pt.iodepth, pt.seed
    duration, warmup = pt.duration_s, pt.warmup_s
    rings = pt.rings
    # blkfront's lock: one per ring (ring_lock, Linux 4.6), or one io_lock for the device
    nflocks = rings if p.fe_lock_per_ring else 1
    dom0 = p.dom0_vcpus
    conn, fe, be, buf_pfn = pair.conn, pair.front, pair.back, pair.buf_pfn
    wl = new_workload(pt.bssplit, pt.rwmixread, DEV_SECTORS)
    ents = int(conn.nr_ents)
    open_loop = p.arrival_ns > 0
    maxio = 65536 if open_loop else jobs * iodepth
    max_split = -(-max_block_sectors(wl) // fe.max_sectors)
    cfg = np.zeros(1, S.CFG_DTYPE)
    c = cfg[0]
    for name, value in dict(
            sq=int(mode == "sq"), jobs=jobs, vcpus=vcpus, ncpu=vcpus + dom0, rings=rings,
            nr_ents=ents, iodepth=iodepth, warm_min=int(round(warmup * 1e9)),
            duration=int(round(duration * 1e9)), maxio=maxio, max_sectors=fe.max_sectors,
            buf_pfn=buf_pfn, open=int(open_loop), ssd=int(p.device_ssd),
            channels=p.ssd_channels, nflocks=nflocks, belock=nflocks,
            max_events=max_events, warm_ios=_warmup_ios(pt),
            drain_max=int(DRAIN_MAX_S * 1e9),
            tag_depth=_tag_depth(mode, ents) if p.tag_wait else 0).items():
        c[name] = value
    c["warm_max"] = c["warm_min"] + int(WARMUP_MAX_S * 1e9)
    if inject is not None:  # test hook: (what, k) drops or duplicates the k-th completion
        c["inject"], c["inject_at"] = S.INJECT[inject[0]], int(inject[1])
    job_ring = blk_mq_map_queues(vcpus, rings)[job_vcpu]
    ring_irq = (np.arange(rings) % vcpus) if (mode == "mq" and p.irq_spread) \
        else np.zeros(rings, np.int64)
    ring_be = vcpus + np.arange(rings) % dom0
    streams = new_streams(seed, 2 * jobs + 1)
    tw = S.new_twin(cfg, streams, len(BLKFRONT_STATS), len(BLKBACK_STATS), job_vcpu,
                    job_ring, ring_irq, ring_be, pcpus=p.pcpus)
    mq = BlkMq(*new_hw_queues(rings, maxio * max_split + 1))
    io = S.Io(fe.arrays(), be.arrays(), mq, wl[0])
    P = p.to_record()
    with first_compile("the discrete-event twin", des_loop, COMPILE_S, quiet=quiet):
        t0 = time.perf_counter()
        run(tw, io, P)
        wall = time.perf_counter() - t0
    s = tw.run[0]
    if s["t_warm"] >= S.NEVER and not s["err"]:
        raise XbqError("simulation ended before its warm-up did (no events left)")
    if s["err"]:
        code = int(s["err"])
        where = f" (I/O tag {int(s['err_tag'])})" if code == S.ERR_DUPLICATE else ""
        raise XbqError(f"simulation failed: {S.ERRORS.get(code, f'code {code}')}{where}")
    ios = tw.ios
    lost_tags = np.flatnonzero(ios["issued"] > ios["completed"])
    lost = int((ios["issued"] - ios["completed"])[lost_tags].sum())
    if lost:
        raise XbqError(f"{lost} request(s) lost: issued but never completed after a "
                       f"{DRAIN_MAX_S:g} s drain (first: I/O tag {int(lost_tags[0])})")
    dur = duration
    done = s["acc_done"]
    dr = tw.drings
    fs = dr["fs1"].sum(axis=0) - dr["fs0"].sum(axis=0)
    bs = dr["bs1"].sum(axis=0) - dr["bs0"].sum(axis=0)
    reqs = max(fs[_FS["requests"]], 1)
    q50, q99, q999 = hist_quantiles(s["hist"], [0.5, 0.99, 0.999]) / 1e3
    in_flight = int(s["in_flight"])
    lat_mean = s["acc_lat_sum"] / done if done else float("nan")
    cpus = tw.cpus
    g = slice(0, vcpus)
    d = slice(vcpus, vcpus + dom0)
    dev_util = s["acc_dev_busy"] / (dur * 1e9)
    if p.device_ssd:
        dev_util /= p.ssd_channels
    parked = float(mq.hctx["parked"].sum())
    row = {
        "engine": "des", "mode": mode, "jobs": jobs, "queues": rings, "vcpus": vcpus,
        "iodepth": iodepth, "rep": 0, "seed": seed, "duration_s": dur,
        "iops": done / dur, "read_iops": s["acc_reads"] / dur,
        "write_iops": s["acc_writes"] / dur, "mbps": s["acc_bytes"] / dur / 1e6,
        "lat_mean_us": lat_mean / 1e3, "lat_p50_us": q50, "lat_p99_us": q99,
        "lat_p999_us": q999, "submitted": int(s["submitted"]),
        "completed": int(s["completed"]),
        "lost": lost, "duplicated": int(s["dup"]),
        "notify_fe_per_req": fs[_FS["notify"]] / reqs,
        "notify_be_per_req": bs[_BS["notify"]] / max(bs[_BS["responses"]], 1),
        "ring_full": int(fs[_FS["ring_full"]]),
        "util_vcpu_busy": cpus["busy"][g].sum() / (vcpus * dur * 1e9),
        "util_vcpu_spin": cpus["spin"][g].sum() / (vcpus * dur * 1e9),
        "util_vcpu_hold": cpus["hold"][g].sum() / (vcpus * dur * 1e9),
        "util_dom0_busy": cpus["busy"][d].sum() / (dom0 * dur * 1e9),
        "util_dom0_spin": cpus["spin"][d].sum() / (dom0 * dur * 1e9),
        "util_dom0_hold": cpus["hold"][d].sum() / (dom0 * dur * 1e9),
        "util_vcpu_steal": cpus["steal"][g].sum() / (vcpus * dur * 1e9),
        "util_dom0_steal": cpus["steal"][d].sum() / (dom0 * dur * 1e9),
        "util_pcpu": ((cpus["busy"].sum() - cpus["steal"].sum()) / (p.pcpus * dur * 1e9)
                      if p.pcpus > 0 else float("nan")),
        "util_device": dev_util,
        "batch_mean": bs[_BS["requests"]] / max(bs[_BS["batches"]], 1),
        "irq_per_req": fs[_FS["interrupts"]] / reqs,
        "ctx_per_req": s["ctx"] / reqs,
        "parked_per_req": parked / max(s["submitted"], 1),
        "tag_wait_per_req": s["tag_waits"] / max(done, 1),
        "little_L": s["acc_area"] / (dur * 1e9),
        "little_XW": (done / dur) * (lat_mean / 1e9) if done else float("nan"),
        "max_ring_occupancy": int(s["max_occ"]), "ring_size": ents,
        "in_flight_end": in_flight, "dropped": int(s["dropped"]),
        "warmup_s": float(s["t_warm"]) / 1e9,
        "events": int(s["events"]), "wall_s": wall,
    }
    return row


def _warmup_ios(pt: DesPoint) -> int:
    if pt.warmup_ios is not None:
        return pt.warmup_ios
    return 0 if pt.params.arrival_ns > 0 else WARMUP_CYCLES * pt.jobs * pt.iodepth


def simulate_point(point: DesPoint, *, quiet: bool = False, max_events: int = 0,
                   _inject: tuple | None = None) -> dict:
    """Simulate one point; return its row (:data:`xbq.engines.schema.COLUMNS`, then the
    columns listed in this module's docstring; ``config`` and ``point_key`` the point's).

    Parameters
    ----------
    point : DesPoint
        Everything the run depends on (checked when it was made).
    quiet : bool
        No "compiling" notice on a cold cache (it is also silent when stderr is no terminal).
    max_events : int
        Test hook: stop after this many events (0: no limit).

    Raises
    ------
    XbqError
        A run that ends before its warm-up, loses or duplicates a request.
    """
    if not isinstance(point, DesPoint):
        raise XbqError(f"simulate_point takes a DesPoint, not {type(point).__name__}")
    return _point(point, int(max_events), _inject, quiet)


def simulate(mode: str, jobs: int | Sequence[int], queues: int = 16, vcpus: int = 16,
             iodepth: int = 64, duration: float = 0.2, seed: int = 1,
             params: DesParams | None = None, *, warmup: float | None = None,
             warmup_ios: int | None = None, bssplit: str = IOMETER_BSSPLIT,
             rwmixread: float = IOMETER_RWMIXREAD, rep: int = 0,
             max_events: int = 0, quiet: bool = False,
             _inject: tuple | None = None) -> pd.DataFrame:
    """Simulate fio's IOmeter job against blkfront/blkback in virtual time.

    Parameters
    ----------
    mode : {"sq", "mq1", "mq"}
        ``sq``: legacy driver, one ring, one ``io_lock`` for submission and completion;
        ``mq1``: blk-mq with one hardware queue; ``mq``: ``queues`` rings with per-ring locks.
    jobs : int or sequence of int
        fio ``numjobs``; one row per value.
    queues : int
        Rings in ``mq`` mode (``sq``/``mq1`` use one).
    vcpus : int
        Guest vCPUs; job j runs on vCPU ``j % vcpus`` (see :func:`job_placement`).
    iodepth : int
        I/Os each job keeps in flight (closed loop; ignored with ``params.arrival_ns > 0``).
    duration : float
        Measured interval in virtual seconds, after ``warmup``.
    seed : int
        Seeds every random stream (jobs, arrivals, device): same seed, same frame.
    params : DesParams, optional
        Costs (default :class:`DesParams()`).
    warmup : float, optional
        Least virtual seconds discarded first (default ``max(0.1 * duration, 2 ms)``).
    warmup_ios : int, optional
        The warm-up also lasts until this many I/Os have completed (default: closed loop
        ``WARMUP_CYCLES * jobs * iodepth``, so the burst of the first ``jobs * iodepth``
        submissions has drained; open loop 0), at most ``WARMUP_MAX_S`` past ``warmup``.
        The row's ``warmup_s`` says when the measured window began.
    quiet : bool
        No "compiling" notice on a cold cache (it is also silent when stderr is no terminal).

    Returns
    -------
    pandas.DataFrame
        One row per ``jobs`` value (:func:`simulate_point` of each :class:`DesPoint`).
    """
    points = points_of(mode, jobs, queues=queues, vcpus=vcpus, iodepth=iodepth,
                       duration_s=duration, warmup_s=warmup, warmup_ios=warmup_ios,
                       seed=seed, rep=rep, bssplit=bssplit, rwmixread=rwmixread,
                       params=params if params is not None else DesParams())
    return to_frame([simulate_point(pt, quiet=quiet, max_events=max_events, _inject=_inject)
                     for pt in points])


def points_of(mode, jobs, **settings) -> list[DesPoint]:
    """One :class:`DesPoint` per value of ``jobs`` (an int or a list), the other settings
    shared; every point is checked before the first one runs."""
    job_list = check_ints("jobs", jobs, 1, MAX_JOBS)
    return [DesPoint(mode=mode, jobs=j, **settings) for j in job_list]
