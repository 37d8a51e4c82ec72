"""Cost parameters of the discrete-event twin: one frozen, typed model, each field with a unit.

Every cost the engine charges is a named field of :class:`DesParams` with its unit in the
name (``_ns`` virtual nanoseconds), a documented default and physical bounds (the range a
real 2015-era x86 host could plausibly show; the calibration never leaves it; 0 switches a
cost off for the textbook checks). Switches are booleans, counts integers. A file given to
``xbq simulate --params FILE`` (TOML or JSON) overrides any subset and is checked whole by
the model: an unknown key, a wrong type (``lock_mcs = 0.5``, ``pcpus = 0.5``) or a value out
of bounds is a one-line :class:`~xbq.errors.XbqError` naming the field. The calibration writes
``{"params": {...}, ...}``; such files are accepted too (only ``params`` is read).

The jitted engine sees the parameters as one record (:data:`PARAMS_DTYPE`, every field a
float64 under its own name: ``P.submit_ns``; a switch is 0.0 or 1.0), made by
:meth:`DesParams.to_record`. :func:`json_schema` is the files' JSON Schema.
"""

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xbq.checks import Int, Switch, as_number, read_config, refusal
from xbq.errors import XbqError

#: Time parameters that cannot be switched off with 0 (time slices).
NOT_SWITCHABLE = frozenset({"quantum_ns", "pcpu_slice_ns"})
#: Physical range of every field: ``(lo, hi)`` (filled below, from the fields).
PHYSICAL: dict = {}


def _cost(default: float, lo: float, hi: float, doc: str):
    """A cost in virtual ns: physical range ``[lo, hi]``, 0 allowed (switched off)."""
    return Field(default, description=doc, ge=0.0, le=hi,
                 json_schema_extra={"unit": "ns", "physical": [lo, hi]})


def _switch(default: bool, doc: str):
    return Field(default, description=doc, json_schema_extra={"unit": ""})


def _count(default: int, doc: str):
    return Field(default, description=doc, json_schema_extra={"unit": ""})


class Costs(BaseModel):
    """The twin's costs, in virtual nanoseconds: what a calibration fits (bounded floats)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    # --- guest: fio and the block layer -------------------------------------------------
    submit_ns: float = _cost(6000.0, 500.0, 50000.0,
        'guest CPU per I/O outside any driver lock: fio, io_submit and io_getevents, bio '
        'and request set-up')
    sq_locked_ns: float = _cost(2000.0, 0.0, 20000.0,
        'sq only: legacy request_fn block-layer work done under the queue lock (= '
        'io_lock): elevator, plug flush, start_request')
    fe_cs_ns: float = _cost(1000.0, 100.0, 20000.0,
        'blkif_queue_rq under the ring lock, per ring request: shadow, grants, slot copy,'
        ' flush_requests')
    irq_entry_ns: float = _cost(1500.0, 100.0, 20000.0,
        'guest upcall entry/exit and evtchn demux per interrupt')
    irq_base_ns: float = _cost(500.0, 0.0, 20000.0,
        'blkif_interrupt under the lock, fixed part per call')
    irq_per_rsp_ns: float = _cost(500.0, 0.0, 20000.0,
        'blkif_interrupt under the lock, per response consumed')
    complete_ns: float = _cost(1000.0, 0.0, 20000.0,
        'per completed I/O after the lock: blk_mq_end_request, aio completion, wake-up of'
        ' the fio thread')
    ctx_switch_ns: float = _cost(2000.0, 500.0, 10000.0,
        'context switch (or wake from sleep) of a thread on a vCPU: try_to_wake_up, '
        "schedule and a PV guest's switch_mm hypercalls (a few µs)")
    vcpu_wake_ns: float = _cost(0.0, 0.0, 50000.0,
        'a guest vCPU blocked in Xen (idle) woken by an event: vcpu_unblock, the '
        "scheduler's tickle IPI, the switch into the vCPU, before it runs anything (0: "
        'off, the default and the golden outputs; physically 1-50 µs)')
    halt_poll_ns: float = _cost(0.0, 0.0, 1000000.0,
        'an idle guest vCPU polls for work this long before it blocks in Xen: work that '
        'arrives while it polls costs no vcpu_wake_ns, and the polling counts as busy '
        "time (Linux's cpuidle-haltpoll; the native engine's spin before its vCPU thread "
        'halts; 0: blocks at once, the default)')
    quantum_ns: float = _cost(3000000.0, 100000.0, 100000000.0,
        'time slice before a runnable thread yields to another on its CPU')
    think_ns: float = _cost(0.0, 0.0, 1000000000.0,
        'mean think time of a job between a completion and its next submission (0: none; '
        'test hook for the repairman model)')
    arrival_ns: float = _cost(0.0, 0.0, 1000000000.0,
        'mean Poisson inter-arrival time per job (0: closed loop with iodepth; >0: open '
        'arrivals, test hook for M/M/1, M/M/c, M/D/1)')

    # --- physical CPUs (Xen's scheduler) ----------------------------------------------------
    pcpu_slice_ns: float = _cost(1000000.0, 100000.0, 30000000.0,
        'Xen time slice of a vCPU on a pCPU while others wait (credit1: 30 ms slice, 1 ms'
        ' rate limit)')

    # --- locks ---------------------------------------------------------------------------
    lock_acquire_ns: float = _cost(50.0, 0.0, 2000.0,
        'uncontended acquire (one cache-line transfer)')
    handoff_base_ns: float = _cost(100.0, 0.0, 5000.0,
        'hand-off of a contended lock to the next waiter')
    handoff_per_waiter_ns: float = _cost(150.0, 0.0, 5000.0,
        'ticket lock only: extra hand-off per waiter spinning at the release (cache-line '
        'broadcast, §4 c/2)')

    # --- event channels ------------------------------------------------------------------
    evtchn_send_ns: float = _cost(1000.0, 50.0, 10000.0,
        "EVTCHNOP_send hypercall, charged to the sender's CPU")
    evtchn_latency_ns: float = _cost(2000.0, 0.0, 50000.0,
        'from the send to the upcall on the receiving vCPU')
    be_poll_ns: float = _cost(0.0, 0.0, 1000000.0,
        "dom0: the backend thread polls for work this long before it sleeps; an upcall "
        "while it polls wakes it at once, with no be_wake_ns and no context switch (the "
        "native engine's dom0 vCPUs spin before they halt; 0: sleeps at once, the default)")
    be_wake_ns: float = _cost(3000.0, 0.0, 100000.0,
        "dom0: from the backend's upcall to its thread running")

    # --- backend (dom0) ------------------------------------------------------------------
    be_batch_ns: float = _cost(1000.0, 0.0, 20000.0,
        'per __do_block_io_op pass: loop, barriers, final check')
    be_req_ns: float = _cost(2000.0, 100.0, 50000.0,
        'per request consumed: copy, validate, bio set-up and submit')
    gnt_map_ns: float = _cost(1500.0, 100.0, 20000.0, 'per grant map (hypercall share)')
    gnt_unmap_ns: float = _cost(1500.0, 100.0, 20000.0,
        'per grant unmap (hypercall and TLB flush share)')
    pgnt_hit_ns: float = _cost(100.0, 0.0, 5000.0, 'per persistent-grant lookup hit')
    be_done_ns: float = _cost(1000.0, 100.0, 20000.0,
        'per completion: end_block_io_op, make_response')
    be_shared_lock_ns: float = _cost(0.0, 0.0, 20000.0,
        "per request, held under one device-wide backend lock that every ring's thread "
        "takes once per request it consumes (the RFC's pers_gnts_lock around the shared "
        'persistent-grant tree); 0 turns the lock off')

    # --- device --------------------------------------------------------------------------
    null_ns: float = _cost(2000.0, 0.0, 1000000.0, 'null device: fixed latency')
    ssd_base_ns: float = _cost(20000.0, 0.0, 100000000.0, 'SSD: mean service time, fixed part')
    ssd_per_sector_ns: float = _cost(0.0, 0.0, 100000.0, 'SSD: mean service per 512-B sector')

    @field_validator("*", mode="before")
    @classmethod
    def _costs_in_bounds(cls, value, info):
        """Every cost: a finite number in its range (0 allowed where it switches the cost
        off), never a bool or a string. (In :class:`DesParams` this also sees the machine's
        fields: they have their own types.)"""
        if not info.field_name.endswith("_ns"):
            return value
        lo, hi = PHYSICAL[info.field_name]
        return as_number(value, lo if info.field_name in NOT_SWITCHABLE else 0.0, hi)


class Machine(BaseModel):
    """The machine the twin runs: switches (booleans) and counts (integers), chosen, never
    fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    # --- guest: fio and the block layer -------------------------------------------------
    tag_wait: Switch = _switch(False,
        '1: a job whose queue has no free request sleeps in blk_mq_get_tag until a '
        'completion frees one (blk-mq tags = ring slots; legacy sq: nr_requests 128); 0: '
        'requests beyond the ring wait on the stopped queue and the job never sleeps for '
        'them')
    think_exp: Switch = _switch(True, '1: think time exponential, 0: deterministic')
    job_placement: Switch = _switch(False,
        '0: job j on vCPU j % vcpus (fio pinned, cpus_allowed); 1: each job on a '
        'uniformly random vCPU (unpinned jobs: the guest scheduler places them), the '
        'point averaged over `placements` draws')
    placements: Int(1, 1024) = _count(1,
        'with job_placement=1: random placements each point is simulated with, stratified'
        " by the vCPUs in use (the same I/O streams in each); the point's figures are "
        'their weighted mean, iops_se the standard error of its IOPS: the expectation '
        'over where the guest scheduler puts unpinned jobs')

    # --- physical CPUs (Xen's scheduler) ----------------------------------------------------
    pcpus: Int(0, 256) = _count(0,
        "physical CPUs shared by the guest's and dom0's vCPUs (0: every vCPU has one of "
        'its own); a runnable vCPU without one waits, its work and any lock it holds or '
        'is handed frozen')
    pcpu_boost: Switch = _switch(True,
        "1: a vCPU waking from idle joins the head of the pCPU run queue (credit1's "
        'BOOST), 0: the tail')

    # --- locks ---------------------------------------------------------------------------
    lock_mcs: Switch = _switch(False, '0: ticket spinlock, 1: MCS queue lock')
    fe_lock_per_ring: Switch = _switch(True,
        "mq: 1, blkfront takes one lock per ring (ring_lock, from 'xen/blkfront: split "
        "per device io_lock', Linux 4.6); 0, one io_lock per device, taken by every "
        "ring's queue_rq and interrupt handler (the series before that patch)")

    # --- backend (dom0) ------------------------------------------------------------------
    dom0_vcpus: Int(1, 64) = _count(16, 'dom0 vCPUs the backend threads run on')
    be_pools_per_ring: Switch = _switch(False,
        "0: the backend lock above is one per device, shared by every ring's thread (the "
        "2015 RFC); 1: one per ring, as the merged series (Linux 4.6) made blkback's "
        'persistent-grant tree and free-page pool per ring: same hold time, no cross-ring'
        ' contention')

    # --- device --------------------------------------------------------------------------
    device_ssd: Switch = _switch(False, '0: null device, 1: SSD-like device')
    ssd_channels: Int(1, 256) = _count(8, 'SSD: parallel channels (servers)')
    ssd_exp: Switch = _switch(True, 'SSD service: 1 exponential, 0 deterministic')

    # --- ring and features ---------------------------------------------------------------
    ring_page_order: Int(0, 4) = _count(0,
        'negotiated ring-page-order (blkfront 2015 default 0: 32 slots)')
    persistent: Switch = _switch(True, 'feature-persistent negotiated')
    max_indirect: Int(0, 256) = _count(32, 'max indirect segments (0: none, 11 per request)')
    irq_spread: Switch = _switch(True,
        "mq: ring r's event bound to vCPU r (1) or all to vCPU 0 (0)")


class DesParams(Machine, Costs):
    """Costs and machine constants of the twin (times in virtual nanoseconds): the fields of
    :class:`Costs` and :class:`Machine` in one flat table, as parameter files write them.

    Defaults describe a 2015 two-socket x86 host running a 16-vCPU PV guest against
    null_blk in dom0; ``data/calibrated/`` holds the values fitted to the seed table.
    Construct with keywords; a bad value raises a one-line :class:`XbqError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False,
                              title="xbq twin parameters")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise refusal(exc) from None

    def to_record(self) -> np.ndarray:
        """The parameters as one :data:`PARAMS_DTYPE` record (the engine's view)."""
        rec = np.zeros(1, PARAMS_DTYPE)
        for n in FIELDS:
            rec[n] = getattr(self, n)
        return rec

    def replace(self, **changes) -> "DesParams":
        """A copy with some fields changed (checked like the constructor)."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise XbqError(f"unknown parameter(s): {', '.join(unknown)}")
        return DesParams(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """Every field by name: costs as floats, switches as bools, counts as ints."""
        return {n: getattr(self, n) for n in FIELDS}

    @property
    def costs(self) -> Costs:
        return Costs.model_construct(**{n: getattr(self, n) for n in COST_FIELDS})

    @property
    def machine(self) -> Machine:
        return Machine.model_construct(**{n: getattr(self, n) for n in MACHINE_FIELDS})


COST_FIELDS = tuple(Costs.model_fields)
PHYSICAL.update({n: tuple(f.json_schema_extra["physical"])
                 for n, f in Costs.model_fields.items()})
MACHINE_FIELDS = tuple(Machine.model_fields)
FIELDS = COST_FIELDS + MACHINE_FIELDS
#: Unit of every field (``"ns"`` or ``""``).
UNITS = {}
for _n, _f in DesParams.model_fields.items():
    _extra = _f.json_schema_extra or {}
    UNITS[_n] = _extra.get("unit", "")
    if _n.endswith("_ns"):
        pass  # its physical range is in PHYSICAL already
    elif _f.annotation is bool:
        PHYSICAL[_n] = (0, 1)
    else:
        _m = {type(c).__name__: c for c in _f.metadata}
        PHYSICAL[_n] = (_m["Ge"].ge, _m["Le"].le)
#: The parameters as the engine reads them: one record, a float64 per cost, an int64 per
#: switch (0 or 1) and count.
PARAMS_DTYPE = np.dtype([(n, "<f8") for n in COST_FIELDS] + [(n, "<i8") for n in MACHINE_FIELDS])


def kind(name: str) -> str:
    """``"cost"`` (a ``_ns`` float), ``"switch"`` (a bool) or ``"count"`` (an int)."""
    if name.endswith("_ns"):
        return "cost"
    return "switch" if DesParams.model_fields[name].annotation is bool else "count"


def describe() -> list[dict]:
    """Each parameter's name, kind, unit, default, physical bounds and meaning (for docs and
    ``--help``)."""
    return [{"name": n, "kind": kind(n), "unit": UNITS[n], "default": f.default,
             "min": PHYSICAL[n][0], "max": PHYSICAL[n][1], "doc": f.description}
            for n, f in DesParams.model_fields.items()]


class CalibrationFile(BaseModel):
    """A file ``xbq calibrate --out`` wrote: its ``params`` table is what is read."""

    model_config = ConfigDict(extra="allow", title="xbq calibration result")
    params: DesParams


def json_schema() -> dict:
    """The JSON Schema of a parameter file: a table of :class:`DesParams` fields, or a
    calibration result with such a ``params`` table."""
    table = DesParams.model_json_schema(ref_template="#/$defs/{model}")
    calibration = CalibrationFile.model_json_schema(ref_template="#/$defs/{model}")
    calibration.pop("$defs", None)
    return {"title": "xbq twin parameter file", "$schema":
            "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"DesParams": table}, "anyOf": [{"$ref": "#/$defs/DesParams"},
                                                     calibration]}


def load_params(path, base: DesParams | None = None) -> DesParams:
    """Read overrides from a TOML or JSON file onto ``base`` (default: the defaults).

    A file with a top-level ``params`` table (what ``xbq calibrate --out`` writes) is read
    from that table. Raises a one-line :class:`XbqError` on a missing or unreadable file, bad
    syntax, an unknown key, a wrong type or a value out of bounds, naming the field.
    """
    p = Path(path)
    data = read_config(p, what="parameters", default="json")
    if isinstance(data, dict) and "params" in data:
        data = data["params"]
    if not isinstance(data, dict):
        raise XbqError(f"{p}: expected a table of parameter = value")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise XbqError(f"{p}: unknown parameter(s): {', '.join(map(str, unknown))}")
    try:
        return DesParams(**{**(base or DesParams()).to_dict(), **data})
    except XbqError as exc:
        raise XbqError(f"{p}: {exc}") from None


def textbook(**changes) -> DesParams:
    """Parameters with every CPU, lock and event cost zero: only the device (and think or
    arrival times) take time, so the twin becomes a textbook queue (test hook)."""
    zero = {n: 0.0 for n in FIELDS if kind(n) == "cost" and n not in NOT_SWITCHABLE}
    return DesParams(**zero).replace(**changes)
