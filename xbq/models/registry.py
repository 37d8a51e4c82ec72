"""The fit-able models by name, with their parameter specs and batched evaluators.

Each :class:`ModelSpec` evaluates IOPS for a matrix of parameter rows at once
(``evaluate(x, P)`` with ``P`` of shape (B, len(params))), which is what lets the fitting
engine run a thousand bootstrap refits in one vectorised Levenberg–Marquardt loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xbq.errors import XbqError
from xbq.models.host import host_batch
from xbq.models.locks import ticket_batch
from xbq.models.mva import mva_fit_batch
from xbq.models.repairman import repairman_batch
from xbq.models.xenblk import xenblk_batch

US_PER_S = 1e6
INF = float("inf")


@dataclass(frozen=True)
class ParamSpec:
    """One model parameter.

    Attributes
    ----------
    name : str
        Parameter name (as in ``--fix name=value``).
    default : float
        Starting value (free) or value (fixed).
    lower, upper : float
        Bounds for fitting.
    unit : str
        Unit (``IOPS``, ``µs``, ``1``, ``CPUs``...).
    meaning : str
        What it stands for physically.
    fixed : bool
        Fixed unless freed; constants of the machine are fixed.
    column : str or None
        Data column that supplies the value when present (``vcpus``, ``queues``).
    local : bool
        In a joint fit, estimated per series (True) or shared (False).
    """

    name: str
    default: float
    lower: float
    upper: float
    unit: str
    meaning: str
    fixed: bool = False
    column: str | None = None
    local: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ModelSpec:
    """A named model: parameter specs and a batched evaluator ``(x, P) -> IOPS (B, m)``."""

    name: str
    params: tuple[ParamSpec, ...]
    evaluate: Callable[[np.ndarray, np.ndarray], np.ndarray]
    description: str
    integer_x: bool = False
    #: Least number of starts of the multi-start fit: more for a model whose bounds (a
    #: ``min`` of regimes) leave several local optima.
    n_starts: int = 8

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise XbqError(f"model {self.name!r} has no parameter {name!r} "
                       f"(has {', '.join(self.names)})")

    def __call__(self, x, **values) -> np.ndarray:
        """Evaluate at ``x`` with named values (defaults for the rest); returns IOPS."""
        row = np.array([[float(values.get(p.name, p.default)) for p in self.params]])
        for k in values:
            self.param(k)
        return self.evaluate(np.atleast_1d(np.asarray(x, dtype=float)), row)[0]


def _col(P, i):
    return P[:, i][:, None]


def _amdahl(x, P):
    g, s = _col(P, 0), _col(P, 1)
    return g * x / (1.0 + s * (x - 1.0))


def _usl(x, P):
    g, a, b = _col(P, 0), _col(P, 1), _col(P, 2)
    return g * x / (1.0 + a * (x - 1.0) + b * x * (x - 1.0))


def _usl_capped(x, P):
    n = np.minimum(x[None, :], _col(P, 3))
    g, a, b = _col(P, 0), _col(P, 1), _col(P, 2)
    return g * n / (1.0 + a * (n - 1.0) + b * n * (n - 1.0))


def _c(P, i):
    return np.ascontiguousarray(P[:, i], dtype=float)


def _mva(x, P):
    return mva_fit_batch(x, _c(P, 0), _c(P, 1), _c(P, 2)) * US_PER_S


def _repairman(x, P):
    servers = np.maximum(1, np.rint(P[:, 2])).astype(np.int64)
    return repairman_batch(x, _c(P, 0), _c(P, 1), servers, _c(P, 3)) * US_PER_S


def _ticket(x, P):
    return ticket_batch(x, _c(P, 0), _c(P, 1), _c(P, 2), _c(P, 3), True) * US_PER_S


def _mcs(x, P):
    return ticket_batch(x, _c(P, 0), _c(P, 1), _c(P, 2), _c(P, 3), False) * US_PER_S


def _xenblk(x, P):
    return xenblk_batch(x, np.ascontiguousarray(P, dtype=float)) * US_PER_S


_GAMMA = ParamSpec("gamma", 5e4, 1.0, 1e8, "IOPS", "throughput of one job", local=True)
_CAP = ParamSpec("cap", 16.0, 1.0, 4096.0, "jobs",
                 "contender cap: at most this many jobs spin at once (the vCPU count)",
                 fixed=True, column="vcpus")
_VCPUS = ParamSpec("vcpus", 16.0, 1.0, 4096.0, "CPUs", "guest vCPUs", fixed=True,
                   column="vcpus")
_A = ParamSpec("think", 10.0, 0.01, 1e4, "µs",
               "parallel work per request between lock releases (a)")
_S_LOCAL = ParamSpec("serial", 5.0, 0.0, 1e4, "µs", "critical-section time per request (s)",
                     local=True)

MODELS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    MODELS[spec.name] = spec


_register(ModelSpec("amdahl", (
    _GAMMA,
    ParamSpec("sigma", 0.1, 0.0, 1.0, "1", "serial fraction", local=True),
), _amdahl, "Amdahl's law gamma*N/(1+sigma(N-1)): monotone, no peak"))

_register(ModelSpec("usl", (
    _GAMMA,
    ParamSpec("alpha", 0.05, 0.0, 1.0, "1", "contention (serialisation)", local=True),
    ParamSpec("beta", 1e-3, 0.0, 1.0, "1", "coherency (pairwise crosstalk)", local=True),
), _usl, "Universal Scalability Law (Gunther)"))

_register(ModelSpec("usl-capped", (
    _GAMMA,
    ParamSpec("alpha", 0.05, 0.0, 1.0, "1", "contention (serialisation)", local=True),
    ParamSpec("beta", 1e-3, 0.0, 1.0, "1", "coherency (pairwise crosstalk)", local=True),
    _CAP,
), _usl_capped, "USL with contenders min(N, cap)"))

_register(ModelSpec("mva", (
    ParamSpec("t_cpu", 10.0, 0.01, 1e4, "µs", "guest CPU demand per request (vcpus servers)"),
    ParamSpec("t_lock", 5.0, 0.01, 1e4, "µs", "demand at the lock (one server)", local=True),
    _VCPUS,
), _mva, "exact load-dependent MVA: a vcpus-server CPU station and a one-server lock",
    integer_x=True))

_register(ModelSpec("repairman", (
    _A,
    ParamSpec("service", 5.0, 0.01, 1e4, "µs", "service time at the lock/server (S)",
              local=True),
    ParamSpec("servers", 1.0, 1.0, 1024.0, "1", "repairers m", fixed=True),
    _CAP,
), _repairman, "machine repairman M/M/m//N with sources capped at the vCPU count",
    integer_x=True))

_register(ModelSpec("ticket", (
    _A,
    _S_LOCAL,
    ParamSpec("handoff", 0.2, 0.0, 100.0, "µs",
              "cache-line hand-off per waiter (c); a hand-off costs c*k/2"),
    _CAP,
), _ticket, "ticket-lock collapse model (Boyd-Wickizer et al. 2012), contenders capped",
    integer_x=True))

_register(ModelSpec("mcs", (
    _A,
    _S_LOCAL,
    ParamSpec("handoff", 0.0, 0.0, 100.0, "µs",
              "constant hand-off per acquisition (not separable from serial; fixed)",
              fixed=True),
    _CAP,
), _mcs, "MCS queue lock: constant hand-off, saturates instead of collapsing",
    integer_x=True))

_register(ModelSpec("xenblk", (
    ParamSpec("t_cpu", 8.0, 0.1, 1e3, "µs",
              "guest CPU work per request outside any lock (fio, block layer, blkfront)"),
    ParamSpec("t_ring", 8.0, 0.0, 1e3, "µs",
              "work under the ring lock per request (queue_rq + response handling)"),
    ParamSpec("t_shared", 1.5, 0.0, 1e3, "µs",
              "work under device-wide state shared by all rings (same lock when Q=1)"),
    ParamSpec("t_handoff", 0.3, 0.0, 100.0, "µs",
              "ticket hand-off per contender: cache-line transfer time (c)"),
    ParamSpec("t_wake", 2.0, 0.0, 1e3, "µs",
              "wake-up of a sleeping job in the completion path, under the lock"),
    ParamSpec("pcpus", 14.0, 1.0, 4096.0, "CPUs",
              "physical CPU capacity left to the guest's vCPUs"),
    _VCPUS,
    ParamSpec("queues", 1.0, 1.0, 4096.0, "rings", "rings (1 = single_ring)", fixed=True,
              column="queues"),
    ParamSpec("ring_size", 32.0, 1.0, 1e6, "slots", "requests in flight per ring", fixed=True),
    ParamSpec("t_back", 0.5, 0.0, 1e4, "µs", "backend thread time per request (per ring)",
              fixed=True),
    ParamSpec("t_dev", 1.0, 0.0, 1e6, "µs", "device time per request (null_blk)", fixed=True),
), _xenblk, "mechanistic xen-blk model (ticket ring locks, vCPU/pCPU sharing, rings)",
    integer_x=True))


_register(ModelSpec("host", (
    ParamSpec("t_cpu", 1.0, 0.01, 1e4, "µs", "host CPU time per I/O, guest and dom0"),
    ParamSpec("t_sched", 1.0, 0.0, 1e4, "µs",
              "host scheduling work per I/O at one busy thread per host CPU, amortised as "
              "H/A when A busy vCPU threads share H host CPUs"),
    ParamSpec("t_irq", 0.5, 0.01, 1e4, "µs",
              "work per I/O on a ring's interrupt vCPU (its share of a host CPU bounds the "
              "ring)"),
    ParamSpec("t_wake", 0.5, 0.0, 1e4, "µs",
              "work on the interrupt vCPU per wake-up of a task: a job on another vCPU, or "
              "one asleep for a tag"),
    ParamSpec("host_cpus", 2.0, 1.0, 4096.0, "CPUs", "host CPUs H", fixed=True,
              column="host_cpus"),
    _VCPUS,
    ParamSpec("queues", 1.0, 1.0, 4096.0, "rings", "rings R", fixed=True, column="queues"),
    ParamSpec("dom0_vcpus", 16.0, 1.0, 4096.0, "CPUs", "dom0 vCPUs D", fixed=True),
    ParamSpec("ring_size", 32.0, 1.0, 1e6, "tags", "blk-mq tags (requests) per ring T",
              fixed=True, column="nr_ents"),
    ParamSpec("iodepth", 32.0, 1.0, 1e6, "I/Os", "I/Os each job keeps in flight",
              fixed=True, column="iodepth"),
), host_batch, "a guest of V vCPUs and dom0 on H host CPUs: processor sharing when busy "
    "threads exceed H, each ring bounded by its interrupt vCPU's share", integer_x=True,
    n_starts=128))


def get_model(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` called ``name`` (raises XbqError for unknown names)."""
    try:
        return MODELS[name]
    except KeyError:
        raise XbqError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
