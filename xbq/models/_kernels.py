"""Private numba kernels: the hot loops of the models (birth–death chains, MVA recursions).

Everything here takes and returns plain float64/int64 arrays, does no argument checking and
is only called through the checked wrappers of :mod:`xbq.models`. Times are in µs and
throughputs in requests per µs; the wrappers convert to IOPS.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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


@njit(cache=True)
def xenblk_batch(x, P):
    """The xen-blk model for B parameter rows; see :func:`xbq.models.xenblk.throughput`.

    Columns of ``P``: t_cpu, t_ring, t_shared, t_handoff, t_wake, pcpus, vcpus, queues,
    ring_size, t_back, t_dev. Returns (B, m) requests per µs.
    """
    B = P.shape[0]
    m = x.shape[0]
    out = np.empty((B, m))
    for b in range(B):
        t_cpu = P[b, 0]
        t_ring = P[b, 1]
        t_shared = P[b, 2]
        c = P[b, 3]
        t_wake = P[b, 4]
        pcpus = P[b, 5]
        vcpus = P[b, 6]
        queues = max(1.0, P[b, 7])
        ring_size = P[b, 8]
        t_back = P[b, 9]
        t_dev = P[b, 10]
        for i in range(m):
            jobs = x[i]
            n = int(np.rint(min(jobs, vcpus)))
            n = max(n, 1)
            # vCPUs beyond the physical CPUs time-share them: each runs at speed pcpus/n.
            speed = 1.0 if n <= pcpus else pcpus / n
            # jobs beyond the vCPUs sleep; a completion for a sleeping job wakes it inside
            # the completion path, with the lock that path holds (the one ring lock, or the
            # device-wide lock shared by all rings): blkif_interrupt ends requests locked.
            asleep = 0.0 if jobs <= vcpus else 1.0 - vcpus / jobs
            wake = t_wake * asleep
            svc = np.empty(n)
            if queues <= 1.0:
                # one ring, one lock: ring work and shared work serialise together
                think = t_cpu / speed
                for k in range(1, n + 1):
                    svc[k - 1] = (t_ring + t_shared) / speed + wake + c * k / 2.0
                xg, _ = birth_death(n, think, svc)
            else:
                # Q rings with their own locks; CPUs spread over rings. With at most one
                # CPU per ring the ring lock is uncontended and its work is plain CPU time;
                # only the state shared by all rings stays behind one lock.
                per_ring = n / queues
                if per_ring <= 1.0:
                    think = (t_cpu + t_ring) / speed + c / 2.0
                    for k in range(1, n + 1):
                        svc[k - 1] = t_shared / speed + wake + c * k / 2.0
                    xg, _ = birth_death(n, think, svc)
                else:
                    # several CPUs per ring: ring locks become the contended stations;
                    # approximate by the slower of ring-lock and shared-lock chains
                    nr = int(np.ceil(per_ring))
                    svr = np.empty(nr)
                    for k in range(1, nr + 1):
                        svr[k - 1] = t_ring / speed + c * k / 2.0
                    xr, _ = birth_death(nr, (t_cpu + t_shared) / speed + wake, svr)
                    for k in range(1, n + 1):
                        svc[k - 1] = t_shared / speed + wake + c * k / 2.0
                    xs, _ = birth_death(n, (t_cpu + t_ring) / speed, svc)
                    xg = min(xr * queues * per_ring / nr, xs)
            # backend thread per ring and ring slots: hard ceilings
            cap = xg
            if t_back > 0.0:
                cap = min(cap, queues / t_back)
            if t_back + t_dev > 0.0:
                cap = min(cap, queues * ring_size / (t_back + t_dev))
            out[b, i] = cap
    return out
