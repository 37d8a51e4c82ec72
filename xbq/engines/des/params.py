"""Cost parameters of the discrete-event twin: one frozen dataclass, each field with a unit.

Every cost the engine charges is a named field of :class:`DesParams` with its unit in the
name (``_ns`` virtual nanoseconds), a documented default and physical bounds (the range a
real 2015-era x86 host could plausibly show; the calibration never leaves it). A file given
to ``xbq simulate --params FILE`` (TOML or JSON) overrides any subset; an unknown key or a
value outside its bounds is a one-line :class:`~xbq.errors.XbqError`. The calibration writes
``{"params": {...}, ...}``; such files are accepted too (only ``params`` is read).

The jitted engine sees the parameters as one record (:data:`PARAMS_DTYPE`, every field a
float64 under its own name: ``P.submit_ns``), made by :meth:`DesParams.to_record`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xbq.checks import read_config
from xbq.errors import XbqError

#: Time parameters that cannot be switched off with 0 (time slices).
NOT_SWITCHABLE = frozenset({"quantum_ns", "pcpu_slice_ns"})


def _p(default, unit, lo, hi, doc):
    return field(default=default, metadata={"unit": unit, "bounds": (lo, hi), "doc": doc})


@dataclass(frozen=True)
class DesParams:
    """Costs and machine constants of the twin (times in virtual nanoseconds).

    Defaults describe a 2015 two-socket x86 host running a 16-vCPU PV guest against
    null_blk in dom0; ``data/calibrated/`` holds the values fitted to the seed table.
    """

    # --- guest: fio and the block layer -------------------------------------------------
    submit_ns: float = _p(6000.0, "ns", 500.0, 50000.0,
                          "guest CPU per I/O outside any driver lock: fio, io_submit and "
                          "io_getevents, bio and request set-up")
    sq_locked_ns: float = _p(2000.0, "ns", 0.0, 20000.0,
                             "sq only: legacy request_fn block-layer work done under the "
                             "queue lock (= io_lock): elevator, plug flush, start_request")
    fe_cs_ns: float = _p(1000.0, "ns", 100.0, 20000.0,
                         "blkif_queue_rq under the ring lock, per ring request: shadow, "
                         "grants, slot copy, flush_requests")
    irq_entry_ns: float = _p(1500.0, "ns", 100.0, 20000.0,
                             "guest upcall entry/exit and evtchn demux per interrupt")
    irq_base_ns: float = _p(500.0, "ns", 0.0, 20000.0,
                            "blkif_interrupt under the lock, fixed part per call")
    irq_per_rsp_ns: float = _p(500.0, "ns", 0.0, 20000.0,
                               "blkif_interrupt under the lock, per response consumed")
    complete_ns: float = _p(1000.0, "ns", 0.0, 20000.0,
                            "per completed I/O after the lock: blk_mq_end_request, aio "
                            "completion, wake-up of the fio thread")
    ctx_switch_ns: float = _p(2000.0, "ns", 500.0, 10000.0,
                              "context switch (or wake from sleep) of a thread on a vCPU: "
                              "try_to_wake_up, schedule and a PV guest's switch_mm hypercalls "
                              "(a few µs)")
    vcpu_wake_ns: float = _p(0.0, "ns", 0.0, 50000.0,
                             "a guest vCPU blocked in Xen (idle) woken by an event: "
                             "vcpu_unblock, the scheduler's tickle IPI, the switch into the "
                             "vCPU, before it runs anything (0: off, the default and the "
                             "golden outputs; physically 1-50 µs)")
    tag_wait: float = _p(0.0, "", 0.0, 1.0,
                         "1: a job whose queue has no free request sleeps in "
                         "blk_mq_get_tag until a completion frees one (blk-mq tags = ring "
                         "slots; legacy sq: nr_requests 128); 0: requests beyond the ring "
                         "wait on the stopped queue and the job never sleeps for them")
    quantum_ns: float = _p(3.0e6, "ns", 1.0e5, 1.0e8,
                           "time slice before a runnable thread yields to another on its CPU")
    think_ns: float = _p(0.0, "ns", 0.0, 1.0e9,
                         "mean think time of a job between a completion and its next "
                         "submission (0: none; test hook for the repairman model)")
    think_exp: float = _p(1.0, "", 0.0, 1.0, "1: think time exponential, 0: deterministic")
    arrival_ns: float = _p(0.0, "ns", 0.0, 1.0e9,
                           "mean Poisson inter-arrival time per job (0: closed loop with "
                           "iodepth; >0: open arrivals, test hook for M/M/1, M/M/c, M/D/1)")
    job_placement: float = _p(0.0, "", 0.0, 1.0,
                              "0: job j on vCPU j % vcpus (fio pinned, cpus_allowed); 1: each "
                              "job on a uniformly random vCPU (unpinned jobs: the guest "
                              "scheduler places them), the point averaged over `placements` "
                              "draws")
    placements: float = _p(1.0, "", 1.0, 1024.0,
                           "with job_placement=1: random placements each point is simulated "
                           "with, stratified by the vCPUs in use (the same I/O streams in "
                           "each); the point's figures are their weighted mean, iops_se the "
                           "standard error of its IOPS: the expectation over where the guest "
                           "scheduler puts unpinned jobs")
    # --- physical CPUs (Xen's scheduler) ----------------------------------------------------
    pcpus: float = _p(0.0, "", 0.0, 256.0,
                      "physical CPUs shared by the guest's and dom0's vCPUs (0: every vCPU "
                      "has one of its own); a runnable vCPU without one waits, its work "
                      "and any lock it holds or is handed frozen")
    pcpu_slice_ns: float = _p(1.0e6, "ns", 1.0e5, 3.0e7,
                              "Xen time slice of a vCPU on a pCPU while others wait "
                              "(credit1: 30 ms slice, 1 ms rate limit)")
    pcpu_boost: float = _p(1.0, "", 0.0, 1.0,
                           "1: a vCPU waking from idle joins the head of the pCPU run queue "
                           "(credit1's BOOST), 0: the tail")
    # --- locks ---------------------------------------------------------------------------
    lock_mcs: float = _p(0.0, "", 0.0, 1.0, "0: ticket spinlock, 1: MCS queue lock")
    lock_acquire_ns: float = _p(50.0, "ns", 0.0, 2000.0,
                                "uncontended acquire (one cache-line transfer)")
    handoff_base_ns: float = _p(100.0, "ns", 0.0, 5000.0,
                                "hand-off of a contended lock to the next waiter")
    handoff_per_waiter_ns: float = _p(150.0, "ns", 0.0, 5000.0,
                                      "ticket lock only: extra hand-off per waiter spinning "
                                      "at the release (cache-line broadcast, §4 c/2)")
    fe_lock_per_ring: float = _p(1.0, "", 0.0, 1.0,
                                 "mq: 1, blkfront takes one lock per ring (ring_lock, from "
                                 "'xen/blkfront: split per device io_lock', Linux 4.6); 0, one "
                                 "io_lock per device, taken by every ring's queue_rq and "
                                 "interrupt handler (the series before that patch)")
    # --- event channels ------------------------------------------------------------------
    evtchn_send_ns: float = _p(1000.0, "ns", 50.0, 10000.0,
                               "EVTCHNOP_send hypercall, charged to the sender's CPU")
    evtchn_latency_ns: float = _p(2000.0, "ns", 0.0, 50000.0,
                                  "from the send to the upcall on the receiving vCPU")
    be_wake_ns: float = _p(3000.0, "ns", 0.0, 100000.0,
                           "dom0: from the backend's upcall to its thread running")
    # --- backend (dom0) ------------------------------------------------------------------
    dom0_vcpus: float = _p(16.0, "", 1.0, 64.0, "dom0 vCPUs the backend threads run on")
    be_batch_ns: float = _p(1000.0, "ns", 0.0, 20000.0,
                            "per __do_block_io_op pass: loop, barriers, final check")
    be_req_ns: float = _p(2000.0, "ns", 100.0, 50000.0,
                          "per request consumed: copy, validate, bio set-up and submit")
    gnt_map_ns: float = _p(1500.0, "ns", 100.0, 20000.0, "per grant map (hypercall share)")
    gnt_unmap_ns: float = _p(1500.0, "ns", 100.0, 20000.0,
                             "per grant unmap (hypercall and TLB flush share)")
    pgnt_hit_ns: float = _p(100.0, "ns", 0.0, 5000.0, "per persistent-grant lookup hit")
    be_done_ns: float = _p(1000.0, "ns", 100.0, 20000.0,
                           "per completion: end_block_io_op, make_response")
    be_shared_lock_ns: float = _p(0.0, "ns", 0.0, 20000.0,
                                  "per request, held under one device-wide backend lock that "
                                  "every ring's thread takes once per request it consumes "
                                  "(the RFC's pers_gnts_lock around the shared persistent-"
                                  "grant tree); 0 turns the lock off")
    be_pools_per_ring: float = _p(0.0, "", 0.0, 1.0,
                                  "0: the backend lock above is one per device, shared by "
                                  "every ring's thread (the 2015 RFC); 1: one per ring, as "
                                  "the merged series (Linux 4.6) made blkback's persistent-"
                                  "grant tree and free-page pool per ring: same hold time, "
                                  "no cross-ring contention")
    # --- device --------------------------------------------------------------------------
    device_ssd: float = _p(0.0, "", 0.0, 1.0, "0: null device, 1: SSD-like device")
    null_ns: float = _p(2000.0, "ns", 0.0, 1.0e6, "null device: fixed latency")
    ssd_channels: float = _p(8.0, "", 1.0, 256.0, "SSD: parallel channels (servers)")
    ssd_base_ns: float = _p(20000.0, "ns", 0.0, 1.0e8, "SSD: mean service time, fixed part")
    ssd_per_sector_ns: float = _p(0.0, "ns", 0.0, 1.0e5, "SSD: mean service per 512-B sector")
    ssd_exp: float = _p(1.0, "", 0.0, 1.0,
                        "SSD service: 1 exponential, 0 deterministic")
    # --- ring and features ---------------------------------------------------------------
    ring_page_order: float = _p(0.0, "", 0.0, 4.0,
                                "negotiated ring-page-order (blkfront 2015 default 0: 32 slots)")
    persistent: float = _p(1.0, "", 0.0, 1.0, "feature-persistent negotiated")
    max_indirect: float = _p(32.0, "", 0.0, 256.0,
                             "max indirect segments (0: none, 11 per request)")
    irq_spread: float = _p(1.0, "", 0.0, 1.0,
                           "mq: ring r's event bound to vCPU r (1) or all to vCPU 0 (0)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            lo, hi = f.metadata["bounds"]
            if f.metadata["unit"] == "ns" and f.name not in NOT_SWITCHABLE:
                lo = 0.0  # 0 switches a cost off (the textbook hooks); physical range above
            if not isinstance(v, int | float) or not np.isfinite(v) or not lo <= v <= hi:
                raise XbqError(f"parameter {f.name}={v!r} outside its bounds [{lo:g}, {hi:g}] "
                               f"{f.metadata['unit']}")

    def to_record(self) -> np.ndarray:
        """The parameters as one :data:`PARAMS_DTYPE` record (the engine's view)."""
        rec = np.zeros(1, PARAMS_DTYPE)
        for n in FIELDS:
            rec[n] = float(getattr(self, n))
        return rec

    def replace(self, **changes) -> DesParams:
        """A copy with some fields changed (checked like the constructor)."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise XbqError(f"unknown parameter(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: float(v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, float]:
        return {n: float(getattr(self, n)) for n in FIELDS}


FIELDS = tuple(f.name for f in dataclasses.fields(DesParams))
#: The parameters as the engine reads them: one float64 field per :class:`DesParams` field.
PARAMS_DTYPE = np.dtype([(n, "<f8") for n in FIELDS])


def describe() -> list[dict]:
    """Each parameter's name, unit, default, bounds and meaning (for docs and ``--help``)."""
    out = []
    for f in dataclasses.fields(DesParams):
        lo, hi = f.metadata["bounds"]
        out.append({"name": f.name, "unit": f.metadata["unit"], "default": f.default,
                    "min": lo, "max": hi, "doc": f.metadata["doc"]})
    return out


def load_params(path, base: DesParams | None = None) -> DesParams:
    """Read overrides from a TOML or JSON file onto ``base`` (default: the defaults).

    A file with a top-level ``params`` table (what ``xbq calibrate --out`` writes) is read
    from that table. Raises :class:`XbqError` on a missing file, bad syntax, an unknown key or
    a value out of bounds.
    """
    p = Path(path)
    data = read_config(p, what="parameters", default="json")
    if isinstance(data, dict) and isinstance(data.get("params"), dict):
        data = data["params"]
    if not isinstance(data, dict):
        raise XbqError(f"{p}: expected a table of parameter = value")
    bad = [k for k, v in data.items() if not isinstance(v, int | float) or isinstance(v, bool)]
    if bad:
        raise XbqError(f"{p}: parameter(s) {', '.join(bad)} must be numbers")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise XbqError(f"{p}: unknown parameter(s): {', '.join(unknown)}")
    return (base or DesParams()).replace(**data)


def textbook(**changes) -> DesParams:
    """Parameters with every CPU, lock and event cost zero: only the device (and think or
    arrival times) take time, so the twin becomes a textbook queue (test hook)."""
    zero = {f.name: 0.0 for f in dataclasses.fields(DesParams)
            if f.metadata["unit"] == "ns" and f.name not in NOT_SWITCHABLE}
    return dataclasses.replace(DesParams(), **zero).replace(**changes)
