"""Synthetic IOPS tables drawn from a model: for recovery tests, coverage studies, demos."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xbq.models.registry import get_model


def synthetic_table(model: str, params: dict, x, *, noise: float = 0.0, seed: int = 0,
                    series: dict[str, dict] | None = None) -> pd.DataFrame:
    """Draw a tidy table from ``model`` with multiplicative Gaussian noise.

    Parameters
    ----------
    model : str
        Registry name.
    params : dict
        Parameter values (the rest take their defaults).
    x : array_like
        Concurrency values (jobs).
    noise : float
        Relative noise sigma (0.02 = 2 %).
    seed : int
        Seed of the noise.
    series : dict, optional
        ``{series name: parameter overrides}``, e.g. ``{"single_ring": {"queues": 1}}``;
        default one series called ``s``.

    Returns
    -------
    pandas.DataFrame
        Columns ``series``, ``jobs``, ``vcpus``, ``queues``, ``iops``.
    """
    spec = get_model(model)
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    rows = []
    for name, extra in (series or {"s": {}}).items():
        vals = {**params, **extra}
        y = spec(x, **vals) * (1.0 + noise * rng.standard_normal(x.size))
        vcpus = vals.get("vcpus", vals.get("cap", 16.0))
        for xi, yi in zip(x, y, strict=True):
            rows.append({"series": name, "jobs": xi, "vcpus": vcpus,
                         "queues": vals.get("queues", 1.0), "iops": yi})
    return pd.DataFrame(rows)
