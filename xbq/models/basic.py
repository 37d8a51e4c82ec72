"""Amdahl's law and the Universal Scalability Law (Gunther), optionally capped.

All functions take concurrency ``n`` (jobs, scalar or 1-D array) and return throughput in the
units of ``gamma`` (IOPS at one job).
"""

from __future__ import annotations

import numpy as np

from xbq.models._checks import concurrency, positive, shape_out


def _usl(n, gamma, alpha, beta):
    return gamma * n / (1.0 + alpha * (n - 1.0) + beta * n * (n - 1.0))


def amdahl(n, gamma: float, sigma: float):
    """Amdahl's law: ``X(N) = gamma*N / (1 + sigma*(N-1))``.

    Parameters
    ----------
    n : float or array_like
        Concurrency (jobs), >= 1.
    gamma : float
        Throughput at one job (IOPS).
    sigma : float
        Serial fraction in [0, 1]; the ceiling is ``gamma/sigma``.

    Returns
    -------
    float or numpy.ndarray
        Throughput (IOPS).
    """
    x = concurrency(n)
    positive("gamma", gamma)
    if not 0.0 <= sigma <= 1.0:
        from xbq.errors import XbqError

        raise XbqError(f"sigma must be in [0, 1] (got {sigma!r})")
    return shape_out(n, _usl(x, gamma, sigma, 0.0))


def usl(n, gamma: float, alpha: float, beta: float, cap: float | None = None):
    """Universal Scalability Law ``gamma*N / (1 + alpha*(N-1) + beta*N*(N-1))``.

    Parameters
    ----------
    n : float or array_like
        Concurrency (jobs), >= 1.
    gamma : float
        Throughput at one job (IOPS).
    alpha : float
        Contention (serialisation), usually in [0, 1).
    beta : float
        Coherency (pairwise crosstalk), >= 0.
    cap : float, optional
        Concurrency cap: contenders are ``min(N, cap)`` (e.g. the vCPU count: beyond it
        extra jobs wait in the guest scheduler, not on the lock).

    Returns
    -------
    float or numpy.ndarray
        Throughput (IOPS).
    """
    x = concurrency(n)
    positive("gamma", gamma)
    positive("beta", beta, allow_zero=True)
    if cap is not None:
        x = np.minimum(x, positive("cap", cap))
    return shape_out(n, _usl(x, gamma, alpha, beta))


def usl_capped(n, gamma: float, alpha: float, beta: float, cap: float):
    """USL with contenders capped at ``cap`` (see :func:`usl`)."""
    return usl(n, gamma, alpha, beta, cap=cap)


def usl_peak(gamma: float, alpha: float, beta: float) -> tuple[float, float]:
    """Return the USL peak ``(N_max, X(N_max))`` with ``N_max = sqrt((1-alpha)/beta)``.

    ``N_max`` is ``inf`` when ``beta == 0`` (no retrograde region).
    """
    if beta <= 0:
        return float("inf"), gamma / alpha if alpha > 0 else float("inf")
    n_max = float(np.sqrt(max(1.0 - alpha, 0.0) / beta))
    return n_max, float(_usl(n_max, gamma, alpha, beta))
