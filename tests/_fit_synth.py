"""Synthetic data sets drawn from each model (shared by the fit tests)."""

import numpy as np
import pandas as pd

from xbq.models import get_model

X = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48, 64.0])

TRUE = {
    "amdahl": {"gamma": 5e4, "sigma": 0.1},
    "usl": {"gamma": 5e4, "alpha": 0.1, "beta": 0.005},
    "usl-capped": {"gamma": 5e4, "alpha": 0.3, "beta": 0.03, "cap": 16.0},
    "mva": {"t_cpu": 16.0, "t_lock": 2.0, "vcpus": 8.0},
    "repairman": {"think": 16.0, "service": 2.0, "servers": 1.0, "cap": 16.0},
    "ticket": {"think": 8.0, "serial": 9.0, "handoff": 0.8, "cap": 16.0},
    "mcs": {"think": 16.0, "serial": 2.0, "handoff": 0.0, "cap": 16.0},
    "xenblk": {"t_cpu": 7.6, "t_ring": 8.4, "t_shared": 1.7, "t_handoff": 0.3, "t_wake": 2.3,
               "pcpus": 13.3, "vcpus": 16.0},
}


def synthetic(model: str, noise: float, seed: int, x=X) -> pd.DataFrame:
    """Tidy table drawn from ``model`` at TRUE with multiplicative Gaussian noise."""
    spec = get_model(model)
    rng = np.random.default_rng(seed)
    rows = []
    series = {"single_ring": 1.0, "multi_ring": 16.0} if model == "xenblk" else {"s": None}
    for name, queues in series.items():
        vals = dict(TRUE[model])
        if queues is not None:
            vals["queues"] = queues
        y = spec(x, **vals) * (1.0 + noise * rng.standard_normal(x.size))
        for xi, yi in zip(x, y, strict=True):
            rows.append({"series": name, "jobs": xi, "vcpus": vals.get("vcpus",
                         vals.get("cap", 16.0)), "queues": queues or 1.0, "iops": yi})
    return pd.DataFrame(rows)
