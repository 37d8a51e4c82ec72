"""Seeded random streams usable in nopython mode (xoshiro256**).

Engines need one independent, reproducible stream per source (each fio job, each device
channel) that jitted code can draw from without the GIL and without NumPy's global state.
A stream is a ``uint64[4]`` state array; :func:`new_streams` seeds any number of them from
one seed through :class:`numpy.random.SeedSequence`, so streams never overlap in practice and
the same seed gives the same draws, bit for bit, on any machine.

Reference: D. Blackman and S. Vigna, "Scrambled linear pseudorandom number generators",
ACM TOMS 47(4), 2021 (xoshiro256**).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import uint64

from xbq._jit import kernel

_ONE = uint64(1)
_FIVE = uint64(5)
_NINE = uint64(9)


@kernel
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@kernel
def rng_next(state):
    """Advance one stream and return its next 64-bit output.

    Parameters
    ----------
    state : ndarray of uint64, shape (4,)
        The stream's state, updated in place.

    Returns
    -------
    numpy.uint64
        A uniformly distributed 64-bit integer.
    """
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    result = _rotl(s1 * _FIVE, 7) * _NINE
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return result


@kernel
def rng_uniform(state):
    """Return a float64 uniformly distributed on [0, 1) (53 random bits)."""
    return np.float64(rng_next(state) >> uint64(11)) * (1.0 / 9007199254740992.0)


@kernel
def rng_below(state, n):
    """Return an integer uniformly distributed on ``[0, n)`` (``n >= 1``), unbiased.

    Uses Lemire's rejection on the top 32 bits for ``n < 2**32``, which covers every range the
    engines draw from (sectors of a disk, job and queue counts).
    """
    bound = uint64(n)
    threshold = (uint64(0x100000000) - bound) % bound
    while True:
        m = (rng_next(state) >> uint64(32)) * bound
        if (m & uint64(0xFFFFFFFF)) >= threshold:
            return np.int64(m >> uint64(32))


@kernel
def rng_exponential(state, mean):
    """Return an exponentially distributed float64 with the given mean (same unit as mean)."""
    return -mean * np.log1p(-rng_uniform(state))


def new_streams(seed: int, n: int) -> np.ndarray:
    """Seed ``n`` independent streams from one integer seed.

    Parameters
    ----------
    seed : int
        Any non-negative integer.
    n : int
        Number of streams (one per job, device, ...).

    Returns
    -------
    ndarray of uint64, shape (n, 4)
        Row ``i`` is the state of stream ``i``; pass ``streams[i]`` to the ``rng_*`` kernels.
    """
    if n < 0:
        raise ValueError(f"number of streams must be >= 0, not {n}")
    return _seeded(int(seed), int(n)).copy()  # a copy: the kernels advance the states


@functools.lru_cache(maxsize=64)
def _seeded(seed: int, n: int) -> np.ndarray:
    """The initial states of :func:`new_streams` (cached: a twin point's placements and a
    calibration's evaluations draw the same streams again and again)."""
    children = np.random.SeedSequence(seed).spawn(n)
    states = np.empty((n, 4), np.uint64)
    for i, child in enumerate(children):
        states[i] = child.generate_state(4, np.uint64)
        if not states[i].any():  # the all-zero state is xoshiro's only fixed point
            states[i, 0] = 1
    states.flags.writeable = False
    return states
