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
from numba import njit

from xbq.errors import XbqError
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
    X, R, Q = mva_exact(n, d, is_delay, z)
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
        X = ld_throughput(n, d, a, z)
        empty = np.full((n, d.size), np.nan)
        return MVAResult(np.arange(1, n + 1), X * US_PER_S, empty, empty)
    X, Q, P = ld_mva_log(n, d, a, z)
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
    X, P = ld_textbook(n, d, a, positive("think", think, allow_zero=True))
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
    return schweitzer_batch(x, d, is_delay, z, tol, max_iter) * US_PER_S


# --- kernels (no argument checks: called through the wrappers above) ---------------------


@njit(cache=True)
def _logaddexp(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + np.log1p(np.exp(b - a))
    return b + np.log1p(np.exp(a - b))


@njit(cache=True)
def mva_exact(n_max, demand, is_delay, think):
    """Reiser–Lavenberg exact MVA; returns X (n_max,), R (n_max, K), Q (n_max, K)."""
    K = demand.shape[0]
    X = np.zeros(n_max)
    R = np.zeros((n_max, K))
    Q = np.zeros((n_max, K))
    q = np.zeros(K)
    for n in range(1, n_max + 1):
        total = think
        for k in range(K):
            if is_delay[k]:
                R[n - 1, k] = demand[k]
            else:
                R[n - 1, k] = demand[k] * (1.0 + q[k])
            total += R[n - 1, k]
        X[n - 1] = n / total
        for k in range(K):
            q[k] = X[n - 1] * R[n - 1, k]
            Q[n - 1, k] = q[k]
    return X, R, Q


@njit(cache=True)
def _log_station(n_max, demand, rate):
    """log f(j) = sum_{i<=j} log(demand / rate[i-1]) for j = 0..n_max (rate (n_max,))."""
    f = np.empty(n_max + 1)
    f[0] = 0.0
    for j in range(1, n_max + 1):
        f[j] = f[j - 1] + np.log(demand) - np.log(rate[j - 1])
    return f


@njit(cache=True)
def _log_conv(a, b, n_max):
    out = np.full(n_max + 1, -np.inf)
    for n in range(n_max + 1):
        acc = -np.inf
        for j in range(n + 1):
            acc = _logaddexp(acc, a[j] + b[n - j])
        out[n] = acc
    return out


@njit(cache=True)
def ld_mva_log(n_max, demand, rate, think):
    """Exact load-dependent MVA quantities via normalised log-space convolution.

    ``demand`` (K,) µs, ``rate`` (K, n_max) service-rate multipliers alpha_k(j) for j=1..n_max,
    ``think`` µs (a delay station outside the loop). Returns X (n_max,), Q (n_max, K) and the
    marginals P (K, n_max+1, n_max+1) with ``P[k, n, j] = p_k(j | n)``. Every quantity is a
    ratio of sums of positive terms, so probabilities are in [0, 1] by construction.
    """
    K = demand.shape[0]
    logf = np.empty((K, n_max + 1))
    for k in range(K):
        logf[k] = _log_station(n_max, demand[k], rate[k])
    zterm = np.full(n_max + 1, -np.inf)
    if think > 0.0:
        for j in range(n_max + 1):
            zterm[j] = j * np.log(think) - np.sum(np.log(np.arange(1.0, j + 1.0)))
    else:
        zterm[0] = 0.0
    # prefix[k] = think (*) stations 0..k-1 ; suffix[k] = stations k..K-1
    prefix = np.empty((K + 1, n_max + 1))
    suffix = np.empty((K + 1, n_max + 1))
    prefix[0] = zterm
    for k in range(K):
        prefix[k + 1] = _log_conv(prefix[k], logf[k], n_max)
    suffix[K] = np.full(n_max + 1, -np.inf)
    suffix[K, 0] = 0.0
    for k in range(K - 1, -1, -1):
        suffix[k] = _log_conv(logf[k], suffix[k + 1], n_max)
    logG = prefix[K]
    X = np.empty(n_max)
    for n in range(1, n_max + 1):
        X[n - 1] = np.exp(logG[n - 1] - logG[n])
    Q = np.zeros((n_max, K))
    P = np.zeros((K, n_max + 1, n_max + 1))
    for k in range(K):
        rest = _log_conv(prefix[k], suffix[k + 1], n_max)
        for n in range(n_max + 1):
            total = 0.0
            for j in range(n + 1):
                P[k, n, j] = np.exp(logf[k, j] + rest[n - j] - logG[n])
                total += P[k, n, j]
            mean = 0.0
            for j in range(n + 1):
                P[k, n, j] /= total
                mean += j * P[k, n, j]
            if n >= 1:
                Q[n - 1, k] = mean
    return X, Q, P


@njit(cache=True)
def ld_throughput(n_max, demand, rate, think):
    """Throughput only (X(1..n_max), per µs) of the load-dependent network, log space."""
    K = demand.shape[0]
    g = np.full(n_max + 1, -np.inf)
    if think > 0.0:
        for j in range(n_max + 1):
            g[j] = j * np.log(think) - np.sum(np.log(np.arange(1.0, j + 1.0)))
    else:
        g[0] = 0.0
    for k in range(K):
        g = _log_conv(g, _log_station(n_max, demand[k], rate[k]), n_max)
    X = np.empty(n_max)
    for n in range(1, n_max + 1):
        X[n - 1] = np.exp(g[n - 1] - g[n])
    return X


@njit(cache=True)
def ld_textbook(n_max, demand, rate, think):
    """The textbook load-dependent MVA recursion with ``p(0|n) = 1 - sum``: for comparison.

    Returns X (n_max,) and P (K, n_max+1, n_max+1). Near saturation the subtraction
    cancels catastrophically and ``p(0|n)`` can go negative: do not use for results.
    """
    K = demand.shape[0]
    P = np.zeros((K, n_max + 1, n_max + 1))
    for k in range(K):
        P[k, 0, 0] = 1.0
    X = np.empty(n_max)
    for n in range(1, n_max + 1):
        total = think
        for k in range(K):
            r = 0.0
            for j in range(1, n + 1):
                r += j * demand[k] / rate[k, j - 1] * P[k, n - 1, j - 1]
            total += r
        X[n - 1] = n / total
        for k in range(K):
            s = 0.0
            for j in range(1, n + 1):
                P[k, n, j] = X[n - 1] * demand[k] / rate[k, j - 1] * P[k, n - 1, j - 1]
                s += P[k, n, j]
            P[k, n, 0] = 1.0 - s
    return X, P


@njit(cache=True)
def mva_fit_batch(x, t_cpu, t_lock, vcpus):
    """Jobs through a ``vcpus``-server CPU station (t_cpu) and a one-server lock (t_lock).

    Exact solution of this two-station load-dependent network: with k jobs at the lock the
    chain moves k -> k+1 at rate ``min(n-k, vcpus)/t_cpu`` and k -> k-1 at ``1/t_lock``;
    it equals :func:`ld_mva_log` on the same network (tested) at O(n) per population.
    """
    B = t_cpu.shape[0]
    m = x.shape[0]
    out = np.empty((B, m))
    for b in range(B):
        for i in range(m):
            n = int(np.rint(x[i]))
            w = 1.0
            w0 = 1.0
            total = 1.0
            for k in range(1, n + 1):
                w *= min(n - k + 1.0, vcpus[b]) / t_cpu[b] * t_lock[b]
                total += w
                if total > 1e200:
                    w /= total
                    w0 /= total
                    total = 1.0
            p0 = w0 / total
            out[b, i] = (1.0 - p0) / t_lock[b]
    return out


@njit(cache=True)
def schweitzer_batch(x, demand, is_delay, think, tol, max_iter):
    """Schweitzer approximate MVA at each population in ``x``; (len(x),) per µs."""
    K = demand.shape[0]
    m = x.shape[0]
    out = np.empty(m)
    q = np.empty(K)
    for i in range(m):
        n = x[i]
        for k in range(K):
            q[k] = n / K
        xn = 0.0
        for _ in range(max_iter):
            total = think
            for k in range(K):
                if is_delay[k]:
                    total += demand[k]
                else:
                    total += demand[k] * (1.0 + (n - 1.0) / n * q[k])
            x_new = n / total
            delta = 0.0
            for k in range(K):
                if is_delay[k]:
                    qk = x_new * demand[k]
                else:
                    qk = x_new * demand[k] * (1.0 + (n - 1.0) / n * q[k])
                delta = max(delta, abs(qk - q[k]))
                q[k] = qk
            xn = x_new
            if delta < tol:
                break
        out[i] = xn
    return out
