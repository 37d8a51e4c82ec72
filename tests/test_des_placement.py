"""Random placements of unpinned fio jobs: the exact occupancy distribution and the
stratified plan the twin averages a point over."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbq.workload.placement import (
    job_placement,
    left_out,
    occupancy,
    placement_plan,
    stratified_se,
)


@given(st.integers(1, 80), st.integers(1, 32))
@settings(max_examples=60, deadline=None)
def test_occupancy_is_a_distribution_with_the_known_mean(jobs, vcpus):
    p = np.asarray(occupancy(jobs, vcpus))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[0] == (1.0 if jobs == 0 else 0.0)
    mean = float(np.dot(np.arange(p.size), p))
    assert mean == pytest.approx(vcpus * (1 - (1 - 1 / vcpus) ** jobs), rel=1e-9)


def test_occupancy_of_small_cases_and_of_the_seed_points():
    assert occupancy(2, 2) == (0.0, 0.5, 0.5)
    assert occupancy(3, 3)[3] == pytest.approx(math.factorial(3) / 27)
    # 16 jobs on 16 vCPUs use 10.3 on average; a Monte Carlo of plain draws agrees
    rng = np.random.default_rng(0)
    d = np.array([np.unique(rng.integers(0, 16, 16)).size for _ in range(20000)])
    p = np.asarray(occupancy(16, 16))
    for k in (9, 10, 11, 12):
        assert np.mean(d == k) == pytest.approx(p[k], abs=0.01)


@given(st.integers(1, 64), st.sampled_from([2, 4, 16]), st.integers(1, 64),
       st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_a_plan_draws_each_placement_in_its_stratum_and_weights_add_up(jobs, vcpus, n, seed):
    plan = placement_plan(jobs, vcpus, seed, n)
    assert len(plan) == n
    strata, weights, vs = zip(*plan, strict=True)
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    for d, v in zip(strata, vs, strict=True):
        assert v.shape == (jobs,) and 0 <= v.min() and v.max() < vcpus
        assert np.unique(v).size == d
    if n > 1:  # the draws of a stratum share its probability, and the plan is reproducible
        p = occupancy(jobs, vcpus)
        kept = sum(p[d] for d in set(strata))
        for d in set(strata):
            got = sum(w for s, w in zip(strata, weights, strict=True) if s == d)
            assert got == pytest.approx(p[d] / kept, rel=1e-12)
        assert left_out(jobs, vcpus, n) == pytest.approx(1.0 - kept, abs=1e-12)
        again = placement_plan(jobs, vcpus, seed, n)
        assert all((a[2] == b[2]).all() for a, b in zip(plan, again, strict=True))
    else:
        assert (vs[0] == job_placement(jobs, vcpus, seed, True)).all()
        assert left_out(jobs, vcpus, n) == 0.0


def test_stratification_removes_the_variance_between_strata():
    # a quantity that depends only on the vCPUs in use is estimated exactly
    plan = placement_plan(4, 16, 3, 8)
    strata, weights, vs = zip(*plan, strict=True)
    used = [np.unique(v).size for v in vs]
    p = np.asarray(occupancy(4, 16))
    exact = float(np.dot(np.arange(p.size), p))
    kept = sum(p[d] for d in set(strata))
    est = float(np.dot(weights, used))
    assert est == pytest.approx(sum(d * p[d] for d in set(strata)) / kept, rel=1e-12)
    # the strata without a draw bias the estimate, by at most their mass times the spread
    gone = left_out(4, 16, 8)
    assert 0.0 < gone < 0.05
    assert abs(est - exact) <= gone * (p.size - 1) + 1e-12
    assert stratified_se(strata, weights, used) == 0.0
