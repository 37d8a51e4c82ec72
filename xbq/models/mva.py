"""Mean Value Analysis of closed single-class networks (times in µs, throughput in IOPS).

* :func:`mva` — exact MVA (Reiser & Lavenberg 1980) for queueing and delay stations.
* :func:`ld_mva` — exact load-dependent MVA (multi-server or any rate multiplier
  ``alpha_k(j)``). The textbook recursion obtains ``p_k(0|n)`` as ``1 - sum_j p_k(j|n)``,
  which cancels catastrophically near saturation and goes negative; here every marginal is
  a ratio of sums of positive terms computed in log space (normalised convolution of the
  stations' product-form factors), so it lies in [0, 1] and sums to 1 at any N. In exact
  arithmetic the results equal the MVA recursion's.
* :func:`schweitzer` — Schweitzer's approximate MVA (fixed point, no recursion over N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xbq.errors import XbqError
from xbq.models import _kernels
from xbq.models._checks import positive

US_PER_S = 1e6


@dataclass(frozen=True)
class MVAResult:
    """Solution of a closed network for populations ``n = 1..N``.

    Attributes
    ----------
    n : numpy.ndarray
        Populations 1..N.
    throughput : numpy.ndarray
        X(n), IOPS.
    residence : numpy.ndarray
        R_k(n), µs, shape (N, K).
    queue : numpy.ndarray
        Q_k(n), mean number at station k, shape (N, K).
    marginals : numpy.ndarray or None
        ``marginals[k, n, j] = p_k(j | n)``, shape (K, N+1, N+1) (load-dependent MVA only).
    """

    n: np.ndarray
    throughput: np.ndarray
    residence: np.ndarray
    queue: np.ndarray
    marginals: np.ndarray | None = None

    @property
    def response(self) -> np.ndarray:
        """Total residence time per cycle (µs), excluding think time."""
        return self.residence.sum(axis=1)


def _demands(demands) -> np.ndarray:
    d = np.atleast_1d(np.asarray(demands, dtype=float))
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)) or np.any(d < 0):
        raise XbqError("demands must be a non-empty 1-D array of finite values >= 0 (µs)")
    return d


def _population(n_max) -> int:
    n = int(n_max)
    if n != n_max or n < 1:
        raise XbqError(f"population must be an integer >= 1 (got {n_max!r})")
    return n


def mva(n_max: int, demands, delay=None, think: float = 0.0) -> MVAResult:
    """Exact MVA for queueing (FCFS/PS) and delay stations.

    Parameters
    ----------
    n_max : int
        Largest population N; results cover 1..N.
    demands : array_like
        Service demand D_k = V_k*S_k per station (µs).
    delay : array_like of bool, optional
        True where station k is a delay (infinite-server) station.
    think : float
        Think time Z outside the stations (µs).

    Returns
    -------
    MVAResult
    """
    n = _population(n_max)
    d = _demands(demands)
    is_delay = np.zeros(d.size, dtype=np.bool_) if delay is None else np.asarray(delay, bool)
    if is_delay.shape != d.shape:
        raise XbqError("delay must have one flag per station")
    z = positive("think", think, allow_zero=True)
    if z == 0 and np.all(d == 0):
        raise XbqError("at least one demand or the think time must be > 0")
    X, R, Q = _kernels.mva_exact(n, d, is_delay, z)
    return MVAResult(np.arange(1, n + 1), X * US_PER_S, R, Q)


def multi_server_rates(servers, n_max: int) -> np.ndarray:
    """Rate multipliers ``alpha_k(j) = min(j, m_k)`` for stations with ``m_k`` servers.

    ``m_k = inf`` gives a delay station (alpha = j).
    """
    m = np.atleast_1d(np.asarray(servers, dtype=float))
    j = np.arange(1, n_max + 1, dtype=float)
    return np.minimum(j[None, :], m[:, None])


def ld_mva(n_max: int, demands, rates=None, think: float = 0.0, *, servers=None,
           marginals: bool = True) -> MVAResult:
    """Exact load-dependent MVA, numerically stable at any population.

    Parameters
    ----------
    n_max : int
        Largest population N.
    demands : array_like
        Demand D_k at rate multiplier 1 (µs).
    rates : array_like, optional
        ``rates[k, j-1] = alpha_k(j) > 0``: station k serves ``alpha_k(j)`` times faster with
        j customers present; shape (K, N).
    think : float
        Think time Z (µs), a delay station outside the loop.
    servers : array_like, optional
        Instead of ``rates``: servers per station (``min(j, m)`` multipliers).
    marginals : bool
        Compute ``p_k(j|n)`` for every n (O(K N^2) memory); else only X is computed.

    Returns
    -------
    MVAResult
        With ``marginals`` filled (each row non-negative and summing to 1).
    """
    n = _population(n_max)
    d = _demands(demands)
    if (rates is None) == (servers is None):
        raise XbqError("give exactly one of rates or servers")
    a = multi_server_rates(servers, n) if rates is None else np.asarray(rates, dtype=float)
    if a.shape != (d.size, n) or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise XbqError(f"rates must be finite, > 0 and of shape ({d.size}, {n})")
    if np.any(d == 0):
        raise XbqError("load-dependent stations need demands > 0 (drop empty stations)")
    z = positive("think", think, allow_zero=True)
    if not marginals:
        X = _kernels.ld_throughput(n, d, a, z)
        empty = np.full((n, d.size), np.nan)
        return MVAResult(np.arange(1, n + 1), X * US_PER_S, empty, empty)
    X, Q, P = _kernels.ld_mva_log(n, d, a, z)
    R = Q / X[:, None]
    return MVAResult(np.arange(1, n + 1), X * US_PER_S, R, Q, P)


def ld_mva_textbook(n_max: int, demands, rates=None, think: float = 0.0, *, servers=None):
    """The textbook load-dependent recursion (``p(0|n) = 1 - sum``), kept for comparison.

    Returns ``(throughput IOPS, marginals)``. Near saturation its ``p(0|n)`` goes negative;
    use :func:`ld_mva` for results.
    """
    n = _population(n_max)
    d = _demands(demands)
    a = multi_server_rates(servers, n) if rates is None else np.asarray(rates, dtype=float)
    X, P = _kernels.ld_textbook(n, d, a, positive("think", think, allow_zero=True))
    return X * US_PER_S, P


def schweitzer(n, demands, delay=None, think: float = 0.0, *, tol: float = 1e-10,
               max_iter: int = 10_000) -> np.ndarray:
    """Schweitzer (proportional-estimation) approximate MVA.

    Parameters
    ----------
    n : float or array_like
        Populations to solve at (each solved independently by fixed-point iteration).
    demands, delay, think
        As for :func:`mva` (µs).

    Returns
    -------
    numpy.ndarray
        Approximate throughput X(n), IOPS.
    """
    x = np.atleast_1d(np.asarray(n, dtype=float))
    if np.any(x < 1):
        raise XbqError("populations must be >= 1")
    d = _demands(demands)
    is_delay = np.zeros(d.size, dtype=np.bool_) if delay is None else np.asarray(delay, bool)
    z = positive("think", think, allow_zero=True)
    return _kernels.schweitzer_batch(x, d, is_delay, z, tol, max_iter) * US_PER_S
