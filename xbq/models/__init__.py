"""Queueing models of lock contention versus per-queue rings (times in µs, IOPS out).

* :mod:`~xbq.models.basic` — Amdahl, USL (optionally capped at the vCPU count).
* :mod:`~xbq.models.mva` — exact MVA, stable load-dependent MVA, Schweitzer AMVA.
* :mod:`~xbq.models.repairman` — machine repairman M/M/m//N.
* :mod:`~xbq.models.locks` — ticket-lock collapse model and its MCS counterpart.
* :mod:`~xbq.models.xenblk` — the mechanistic single_ring / multi_ring model.
* :mod:`~xbq.models.registry` — the fit-able models by name with parameter specs.
"""

from xbq.models.basic import amdahl, usl, usl_capped, usl_peak
from xbq.models.locks import mcs, ticket, ticket_queue
from xbq.models.mva import MVAResult, ld_mva, ld_mva_textbook, mva, schweitzer
from xbq.models.registry import MODELS, ModelSpec, ParamSpec, get_model
from xbq.models.repairman import repairman, repairman_state
from xbq.models.xenblk import multi_ring, single_ring

__all__ = [
    "MODELS", "MVAResult", "ModelSpec", "ParamSpec", "amdahl", "get_model", "ld_mva",
    "ld_mva_textbook", "mcs", "multi_ring", "mva", "repairman", "repairman_state",
    "schweitzer", "single_ring", "ticket", "ticket_queue", "usl", "usl_capped", "usl_peak",
]
