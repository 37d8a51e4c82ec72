"""Spin-lock collapse: the ticket-lock Markov model and its MCS counterpart.

Boyd-Wickizer, Kaashoek, Morris, Zeldovich, "Non-scalable locks are dangerous", Linux
Symposium 2012. State k = cores holding or waiting for the lock; arrival rate ``(n-k)/a``
(``a`` µs of parallel work between releases); service time with k contenders
``s + c*k/2`` for a ticket lock (every release invalidates ``now_serving`` in all k waiters'
caches and the next holder's read is on average k/2 deep in the directory's queue) and a
constant ``s + c`` for MCS (each waiter spins on its own line). With ``c = 0`` both reduce
to the machine-repairman M/M/1//n.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from xbq.models._checks import concurrency, positive, shape_out
from xbq.models.repairman import birth_death

US_PER_S = 1e6


def _args(n, think, serial, handoff, cap):
    x = concurrency(n, integer=True)
    a = positive("think", think)
    s = positive("serial", serial, allow_zero=True)
    c = positive("handoff", handoff, allow_zero=True)
    cp = np.inf if cap is None else positive("cap", cap)
    if s == 0 and c == 0:
        from xbq.errors import XbqError

        raise XbqError("serial and handoff cannot both be 0 (the lock would take no time)")
    return x, np.array([a]), np.array([s]), np.array([c]), np.array([cp])


def ticket(n, think: float, serial: float, handoff: float, cap: float | None = None):
    """Throughput (IOPS) of n cores sharing a ticket spin lock.

    Parameters
    ----------
    n : int or array_like of int
        Cores (jobs) competing, >= 1.
    think : float
        ``a``: mean parallel work between a release and the next acquire (µs).
    serial : float
        ``s``: critical-section time (µs).
    handoff : float
        ``c``: time for the directory to answer one cache-line request (µs); a hand-off
        with k contenders costs ``c*k/2``.
    cap : float, optional
        At most ``cap`` contenders (the vCPU count).
    """
    x, a, s, c, cp = _args(n, think, serial, handoff, cap)
    return shape_out(n, ticket_batch(x, a, s, c, cp, True)[0] * US_PER_S)


def mcs(n, think: float, serial: float, handoff: float = 0.0, cap: float | None = None):
    """Throughput (IOPS) with an MCS queue lock: constant hand-off ``c`` per acquisition.

    Monotone in n, rising to the plateau ``1/(s + c)``; see :func:`ticket` for parameters.
    """
    x, a, s, c, cp = _args(n, think, serial, handoff, cap)
    return shape_out(n, ticket_batch(x, a, s, c, cp, False)[0] * US_PER_S)


def ticket_queue(n: int, think: float, serial: float, handoff: float) -> float:
    """Mean number of cores holding or waiting for the ticket lock, ``C = sum k P_k``."""
    n = int(concurrency(n, integer=True)[0])
    svc = serial + handoff * np.arange(1, n + 1) / 2.0
    return float(birth_death(n, positive("think", think), svc)[1])


# --- kernels (no argument checks: called through the wrappers above) ---------------------


@njit(cache=True)
def ticket_batch(x, think, serial, handoff, cap, per_waiter):
    """Ticket (per_waiter=True: hand-off ``c*k/2``) or MCS (constant ``c``) lock model.

    ``x`` (m,) concurrency; parameter arrays (B,). Returns (B, m) requests per µs.
    """
    B = think.shape[0]
    m = x.shape[0]
    out = np.empty((B, m))
    for b in range(B):
        for i in range(m):
            n = int(np.rint(min(x[i], cap[b])))
            svc = np.empty(max(n, 1))
            for k in range(1, n + 1):
                if per_waiter:
                    svc[k - 1] = serial[b] + handoff[b] * k / 2.0
                else:
                    svc[k - 1] = serial[b] + handoff[b]
            xb, _ = birth_death(n, think[b], svc)
            out[b, i] = xb
    return out
