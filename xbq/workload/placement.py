"""Where fio's jobs run: pinned round-robin, or placed at random by the guest scheduler.

fio's IOmeter job sets no ``cpus_allowed``, so the guest scheduler decides which vCPU each
job's thread runs on, and blk-mq sends every request to the hardware queue of the vCPU that
submits it. With ``job_placement=1`` the twin (and the native engine, with ``--placement
unpinned``) takes each job's vCPU as uniform and independent, and a point's figures as the
expectation over placements.

That expectation is estimated by stratified sampling. What a placement does to throughput
depends first on how many vCPUs hold jobs (in ``mq`` the rings that carry load, in ``sq``
the vCPUs that contend for ``io_lock``), whose distribution is exact: with ``J`` jobs on
``V`` vCPUs, ``P(D = d) = S(J, d) V! / ((V - d)! V^J)`` (``S`` a Stirling number of the
second kind). :func:`placement_plan` gives each value of ``d`` its share of the placements
(largest remainders), draws each placement uniformly among those with ``d`` vCPUs in use,
and weights each stratum by its probability; a stratum too unlikely to get a draw is left
out and the rest reweighted. One placement alone is a plain uniform draw.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

from xbq.errors import XbqError

#: Tries of the rejection sampler for one placement with a given number of vCPUs in use
#: (a stratum that gets a draw has probability >= 1 / (2 n), so a few dozen are expected).
MAX_TRIES = 1_000_000
_MAGIC = 0x706C6163


def job_placement(jobs: int, vcpus: int, seed: int, random: bool) -> np.ndarray:
    """The vCPU of each job: round-robin, or uniformly at random (depending only on
    ``seed`` and the sizes)."""
    if not random:
        return np.arange(jobs) % vcpus
    key = [seed, jobs, vcpus, _MAGIC]
    return np.random.default_rng(np.random.SeedSequence(key)).integers(0, vcpus, jobs)


@lru_cache(maxsize=256)
def occupancy(jobs: int, vcpus: int) -> tuple[float, ...]:
    """``P(D = d)`` for ``d = 0 .. min(jobs, vcpus)``: the probability that ``jobs`` jobs
    placed uniformly on ``vcpus`` vCPUs occupy exactly ``d`` of them (exact, then rounded)."""
    top = min(jobs, vcpus)
    # Stirling numbers of the second kind S(jobs, d), by the recurrence, in exact integers
    s = [1] + [0] * top
    for n in range(1, jobs + 1):
        for d in range(min(n, top), 0, -1):
            s[d] = d * s[d] + s[d - 1]
        s[0] = 0
    total = vcpus ** jobs
    out, falling = [], 1
    for d in range(top + 1):
        out.append(float(Fraction(s[d] * falling, total)))
        falling *= vcpus - d
    return tuple(out)


def _allocation(jobs: int, vcpus: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P(D = d), draws of stratum d)``: ``n`` draws shared by largest remainders."""
    p = np.asarray(occupancy(jobs, vcpus))
    share = p * n
    alloc = np.floor(share).astype(int)
    for d in np.argsort(-(share - alloc), kind="stable")[: n - alloc.sum()]:
        alloc[d] += 1  # largest remainders
    return p, alloc


def placement_plan(jobs: int, vcpus: int, seed: int,
                   n: int) -> list[tuple[int, float, np.ndarray]]:
    """``n`` placements stratified by the number of vCPUs in use: ``(stratum, weight,
    job_vcpu)``, the stratum being that number, the weights (a stratum's probability over
    its draws) summing to 1."""
    if n == 1:
        v = job_placement(jobs, vcpus, seed, True)
        return [(int(np.unique(v).size), 1.0, v)]
    p, alloc = _allocation(jobs, vcpus, n)
    kept = p[alloc > 0].sum()
    rng = np.random.default_rng(np.random.SeedSequence([seed, jobs, vcpus, _MAGIC, n]))
    plan = []
    for d in np.flatnonzero(alloc):
        for _ in range(alloc[d]):
            plan.append((int(d), float(p[d] / kept / alloc[d]),
                         _draw_with(rng, jobs, vcpus, int(d))))
    return plan


def left_out(jobs: int, vcpus: int, n: int) -> float:
    """Probability of the strata :func:`placement_plan` gives no draw (0 for ``n = 1``, a
    plain draw). The plan estimates the expectation over the other strata, so the estimate
    of the full expectation is off by at most this mass times how far the left-out strata's
    mean lies from it; :func:`stratified_se` does not include that bias."""
    if n == 1:
        return 0.0
    p, alloc = _allocation(jobs, vcpus, n)
    return float(p[alloc == 0].sum())


def stratified_se(strata, weights, values) -> float:
    """Standard error of ``sum(weights * values)`` over a :func:`placement_plan`: the
    within-stratum variances, each over its draws (a stratum of one draw adds none)."""
    strata, weights, values = map(np.asarray, (strata, weights, values))
    var = 0.0
    for d in np.unique(strata):
        m = strata == d
        if m.sum() > 1:
            w = weights[m].sum()  # the stratum's share
            var += w * w * values[m].var(ddof=1) / m.sum()
    return float(np.sqrt(var))


def _draw_with(rng, jobs: int, vcpus: int, d: int) -> np.ndarray:
    """A placement uniform among those with exactly ``d`` vCPUs in use (rejection)."""
    for _ in range(MAX_TRIES):
        v = rng.integers(0, vcpus, jobs)
        if np.unique(v).size == d:
            return v
    raise XbqError(f"no placement of {jobs} jobs on {d} of {vcpus} vCPUs found in "
                   f"{MAX_TRIES} tries")
