"""The machine-repairman (finite-source) model M/M/m//N and its closed form.

N jobs each think (exponential, mean ``think`` µs) and then ask one of ``servers`` repairers
(exponential, mean ``service`` µs). Kleinrock, *Queueing Systems* Vol. 1, §3.8.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import lgamma

import numpy as np
from numba import njit

from xbq.errors import XbqError
from xbq.models._checks import concurrency, positive, shape_out

US_PER_S = 1e6


@dataclass(frozen=True)
class RepairmanState:
    """Steady state of M/M/m//N: ``probs[k]`` = P(k jobs at the servers), and summaries.

    Attributes: ``throughput`` (IOPS), ``utilisation`` (busy servers / m), ``response``
    (µs, interactive response-time law ``N/X - Z``) and ``queue`` (mean jobs at servers).
    """

    probs: np.ndarray
    throughput: float
    utilisation: float
    response: float
    queue: float


def repairman_state(n: int, service: float, think: float, servers: int = 1) -> RepairmanState:
    """Closed form of M/M/m//N: ``p_k ∝ N!/(N-k)! * prod_{j<=k} S/(min(j,m) Z)``.

    Parameters
    ----------
    n : int
        Jobs (sources), >= 1.
    service : float
        Mean service time S (µs).
    think : float
        Mean think time Z (µs).
    servers : int
        Repairers m.
    """
    if int(n) != n or n < 1:
        raise XbqError(f"n must be an integer >= 1 (got {n!r})")
    n = int(n)
    s = positive("service", service)
    z = positive("think", think)
    m = int(servers)
    if m < 1:
        raise XbqError("servers must be >= 1")
    k = np.arange(n + 1)
    log_fall = np.array([lgamma(n + 1) - lgamma(n - j + 1) for j in k])
    log_rate = np.concatenate([[0.0], np.cumsum(np.log(s / (np.minimum(k[1:], m) * z)))])
    logw = log_fall + log_rate
    p = np.exp(logw - logw.max())
    p /= p.sum()
    busy = float(np.sum(np.minimum(k, m) * p))
    x = busy / s
    return RepairmanState(p, x * US_PER_S, busy / m, n / x - z, float(np.sum(k * p)))


def repairman(n, service: float, think: float, servers: int = 1, cap: float | None = None):
    """Throughput of M/M/m//N (IOPS), vectorised over ``n``.

    ``cap`` limits the number of sources (e.g. at most ``vcpus`` jobs can spin at once).
    """
    x = concurrency(n, integer=True)
    s = positive("service", service)
    z = positive("think", think)
    if int(servers) < 1:
        raise XbqError("servers must be >= 1")
    c = np.inf if cap is None else positive("cap", cap)
    out = repairman_batch(x, np.array([z]), np.array([s]),
                                   np.array([int(servers)], dtype=np.int64), np.array([c]))
    return shape_out(n, out[0] * US_PER_S)


# --- kernels (no argument checks: called through the wrappers above) ---------------------


@njit(cache=True)
def birth_death(n, think, service):
    """Closed birth–death chain of ``n`` sources: return (throughput per µs, mean queue).

    State ``k`` (0..n) counts sources at the server; birth rate ``(n-k)/think``, death rate
    ``1/service[k-1]``. Unnormalised weights are products of positive ratios, rescaled
    whenever they grow large, then normalised: never negative, no cancellation.
    ``think`` must be > 0.
    """
    if n <= 0:
        return 0.0, 0.0
    w = 1.0
    total = 1.0
    mean = 0.0
    for k in range(1, n + 1):
        w *= (n - k + 1) / think * service[k - 1]
        total += w
        mean += k * w
        if total > 1e200:
            w /= total
            mean /= total
            total = 1.0
    mean /= total
    return (n - mean) / think, mean


@njit(cache=True)
def repairman_batch(x, think, service, servers, cap):
    """Machine repairman M/M/m//N (``m = servers``); (B, m) requests per µs."""
    B = think.shape[0]
    m = x.shape[0]
    out = np.empty((B, m))
    for b in range(B):
        for i in range(m):
            n = int(np.rint(min(x[i], cap[b])))
            svc = np.empty(max(n, 1))
            for k in range(1, n + 1):
                svc[k - 1] = service[b] / min(k, servers[b])
            xb, _ = birth_death(n, think[b], svc)
            out[b, i] = xb
    return out
