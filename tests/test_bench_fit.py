"""Speed of a full fit of every model with 1000 bootstrap resamples (reported, not asserted).

Run: ``NUMBA_CACHE_DIR=.numba_cache .venv/bin/python -m pytest -m benchmark -s
tests/test_bench_fit.py``.
"""

import time

import pytest

from xbq.fit import compare, fit
from xbq.models import MODELS
from xbq.study.datasets import load_seed


@pytest.mark.benchmark
def test_full_fit_of_every_model_with_1000_bootstrap():
    seed = load_seed()
    fit(seed, "ticket", bootstrap=10)  # load the JIT cache / compile outside the timing
    for model in MODELS:
        fit(seed, model, joint=model == "xenblk", bootstrap=10)
    times = {}
    t_all = time.perf_counter()
    for model in MODELS:
        t0 = time.perf_counter()
        fit(seed, model, joint=model == "xenblk", bootstrap=1000, seed=0)
        times[model] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    print()
    for model, t in times.items():
        print(f"  {model:<11} {t:6.2f} s  (fit + Jacobian SE + 1000 parametric bootstrap "
              "+ LOO + forward)")
    print(f"  all models  {total:6.2f} s")
    t0 = time.perf_counter()
    compare(seed, bootstrap=1000, seed=0)
    print(f"  compare() (the docs table, 8 models, 1000 resamples each): "
          f"{time.perf_counter() - t0:.2f} s")
    assert total > 0
