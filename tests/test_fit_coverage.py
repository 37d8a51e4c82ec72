"""Bootstrap intervals cover the truth at about their nominal rate (slow)."""

import numpy as np
import pytest
from test_fit_core import TRUE

from xbq.fit import fit
from xbq.fit.synthetic import synthetic_table

X = np.array([1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64.0])


@pytest.mark.slow
@pytest.mark.parametrize("model,kind", [("usl", "residual"), ("usl", "parametric"),
                                        ("ticket", "residual"), ("ticket", "parametric")])
def test_bootstrap_coverage_is_near_nominal(model, kind):
    draws, hits = 120, {}
    for i in range(draws):
        df = synthetic_table(model, TRUE[model], X, noise=0.03, seed=1000 + i)
        res = fit(df, model, bootstrap=300, bootstrap_kind=kind, seed=i, loo=False,
                  forward=False, n_starts=4)
        e = res.series["s"]
        for p in e["free"]:
            lo, hi = e["ci"][p]
            hits.setdefault(p, []).append(lo <= TRUE[model][p] <= hi)
    rates = {p: float(np.mean(v)) for p, v in hits.items()}
    print(model, kind, rates)
    # nominal 95 %; with 11 points and 3 parameters percentile intervals run a little short.
    # 120 draws: binomial sd ~2 %, so [0.85, 0.995] flags real miscalibration only.
    # Known limitation, measured and reported in docs/models.md: residual-bootstrap
    # percentile intervals under-cover (0.85-0.92), worst for the ticket model's think time
    # ``a`` (~0.80: its four capped points past 16 jobs add no information about ``a``).
    # The parametric bootstrap draws sigma from its sampling distribution and comes closer.
    floor = {("ticket", "think", "residual"): 0.70}
    for p, r in rates.items():
        assert floor.get((model, p, kind), 0.85) <= r <= 0.995, (p, r)
