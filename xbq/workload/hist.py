"""Log-linear latency histograms kept in jitted code (HdrHistogram's bucketing, simplified).

Values are non-negative integers (nanoseconds). Bucket ``b`` covers an exponent group and one
of ``SUB_BUCKETS`` linear sub-buckets inside it, so the relative error of any quantile is at
most ``1 / SUB_BUCKETS`` (3.1 %) over the whole range up to 2**63 ns. Recording is a few
integer operations with no allocation, fit for a thread's hot loop; quantiles are read
afterwards.
"""

from __future__ import annotations

import functools

import numpy as np

from xbq._jit import kernel

SUB_BITS = 5
SUB_BUCKETS = 1 << SUB_BITS
#: Number of buckets: values below SUB_BUCKETS exactly, then SUB_BUCKETS per power of two.
NR_BUCKETS = SUB_BUCKETS * (64 - SUB_BITS + 1)


def new_hist(n: int = 1) -> np.ndarray:
    """Return ``n`` empty histograms, shape ``(n, NR_BUCKETS)``, int64 counts."""
    return np.zeros((n, NR_BUCKETS), np.int64)


@kernel
def hist_bucket(value):
    """Bucket index of a non-negative integer value (negative values count as 0)."""
    v = np.int64(value)
    if v < SUB_BUCKETS:
        return max(v, 0)
    e = 63
    while (v >> e) == 0:
        e -= 1
    shift = e - SUB_BITS
    return (shift + 1) * SUB_BUCKETS + ((v >> shift) - SUB_BUCKETS)


@kernel
def bucket_low(b):
    """Smallest value that falls in bucket ``b``."""
    if b < SUB_BUCKETS:
        return np.int64(b)
    group = b // SUB_BUCKETS - 1
    return np.int64((SUB_BUCKETS + b % SUB_BUCKETS) << group)


@kernel
def hist_record(h, value):
    """Count one value in histogram row ``h`` (a 1-D view)."""
    h[hist_bucket(value)] += 1


@functools.cache
def _lows() -> np.ndarray:
    """:func:`bucket_low` of every bucket and one past the last (read-only)."""
    lows = np.array([bucket_low(b) for b in range(NR_BUCKETS + 1)], np.float64)
    lows.flags.writeable = False
    return lows


def hist_quantiles(h: np.ndarray, qs) -> np.ndarray:
    """Quantiles of a histogram (or the sum of several rows), as bucket midpoints.

    Parameters
    ----------
    h : ndarray of int64, shape (NR_BUCKETS,) or (n, NR_BUCKETS)
    qs : sequence of float in [0, 1]

    Returns
    -------
    ndarray of float64
        One value per quantile, in the recorded unit; NaN when the histogram is empty.
    """
    counts = np.asarray(h).reshape(-1, NR_BUCKETS).sum(axis=0)
    total = counts.sum()
    if total == 0:
        return np.full(len(qs), np.nan)
    cum = np.cumsum(counts)
    lows = _lows()
    out = np.empty(len(qs))
    for i, q in enumerate(qs):
        b = int(np.searchsorted(cum, max(1, np.ceil(q * total))))
        out[i] = 0.5 * (lows[b] + lows[b + 1] - 1) if b >= SUB_BUCKETS else float(b)
    return out


def hist_mean(h: np.ndarray) -> float:
    """Approximate mean (bucket midpoints) of a histogram or the sum of several rows."""
    counts = np.asarray(h).reshape(-1, NR_BUCKETS).sum(axis=0)
    total = counts.sum()
    if total == 0:
        return float("nan")
    lows = _lows()
    exact = np.arange(NR_BUCKETS) < SUB_BUCKETS
    mids = np.where(exact, lows[:-1], 0.5 * (lows[:-1] + lows[1:] - 1))
    return float((counts * mids).sum() / total)
