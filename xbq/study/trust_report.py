"""The referee's checks of the twin (``data/calibrated/trust.json``, written by
:mod:`xbq.study.trust`) and the twin-versus-native comparison as tables: one
:class:`pandas.DataFrame` per question, for the trust chapter and the docs.

Every function reads only what the checks wrote (no simulation here), so the chapter is
quick to execute and shows exactly the committed figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.errors import XbqError


def load(path) -> dict:
    """The checks' JSON; a one-line :class:`XbqError` if it is missing or lacks a step."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise XbqError(f"cannot read the checks {path}: {exc}") from None
    missing = [s for s in ("identify_all", "calibration", "seeds", "selection", "forward",
                           "loo", "mechanisms") if s not in data]
    if missing:
        raise XbqError(f"{path} lacks step(s) {', '.join(missing)}: rerun "
                       "python -m xbq.study.trust")
    return data


def identifiability(section: dict, values: dict, fixed: dict) -> pd.DataFrame:
    """One row per cost: its value at the optimum analysed (ns), its standard error in
    e-folds with every cost free and, for the costs :func:`xbq.study.identify.select`
    keeps, with only those free; what the determined calibration did with it."""
    info = section["at_5pct"]
    rows = []
    for n, se in info["se_efolds"].items():
        sel = info["selected_se_efolds"].get(n)
        rows.append({"cost": n, "value (ns)": values.get(n, np.nan),
                     "SE, all free (e-folds)": se,
                     "SE, determined set (e-folds)": np.nan if sel is None else sel,
                     "determined calibration": "fitted" if sel is not None else
                     f"fixed at its documented default, {fixed.get(n, np.nan):g} ns"})
    return pd.DataFrame(rows).set_index("cost")


def singular_values(section: dict) -> pd.DataFrame:
    """Singular values of the Jacobian (per e-fold), the condition number and the effective
    parameters, at 5 % noise and at the residuals' own scatter."""
    rows = []
    for key, label in (("at_5pct", "5 % noise"), ("at_residual_rms", "residual RMS")):
        a = section[key]
        rows.append({"noise": f"{label} ({a['sigma']:.1%})",
                     "singular values": ", ".join(f"{v:.3g}" for v in a["singular_values"]),
                     "condition": a["condition"], "effective parameters": a["effective"],
                     "determined (all free)": len(a["determined"]),
                     "nameable (greedy)": len(a["selected"])})
    return pd.DataFrame(rows).set_index("noise")


def correlations(section: dict, threshold: float = 0.9) -> pd.DataFrame:
    """Pairs of costs whose estimates are correlated beyond ``threshold`` (all free)."""
    pairs = [c for c in section["at_5pct"]["strong_correlations"] if abs(c["rho"]) >= threshold]
    return pd.DataFrame(pairs, columns=["a", "b", "rho"])


def per_seed(section: dict) -> pd.DataFrame:
    """Each calibration on each unseen seed: points within 10 % (of 12), largest and median
    absolute error."""
    rows = []
    for label, runs in section["calibrations"].items():
        for r in runs:
            rows.append({"calibration": label, "seed": r["seed"],
                         "within 10 %": r["within_10pct"], "max |error|": r["max_abs"],
                         "median |error|": r["median_abs"]})
    return pd.DataFrame(rows)


def seed_summary(section: dict) -> pd.DataFrame:
    """The per-seed results as a distribution: seeds with all points within 10 %, the range
    of the count and of the largest error."""
    df = per_seed(section)
    out = []
    for label, g in df.groupby("calibration", sort=False):
        out.append({"calibration": label, "seeds": len(g),
                    "seeds with 12/12": int((g["within 10 %"] == 12).sum()),
                    "within 10 % (min-max)": f"{g['within 10 %'].min()}-{g['within 10 %'].max()}",
                    "max |error| (median over seeds)": float(g["max |error|"].median()),
                    "max |error| (worst seed)": float(g["max |error|"].max())})
    return pd.DataFrame(out).set_index("calibration")


def selection(section: dict) -> pd.DataFrame:
    """AIC, AICc and BIC on the relative residuals, with every choice counted."""
    rows = [r for r in section["rows"] if "error" not in r]
    df = pd.DataFrame(rows)[["model", "costs", "choices", "k", "rss", "aic", "aicc", "bic"]]
    return df.set_index("model")


def forward(section: dict) -> pd.DataFrame:
    """The forward test: trained on jobs <= 16 (machine setting included), 32 and 64 jobs
    predicted, beside the flat 16-job value and the xen-blk model."""
    df = pd.DataFrame(section["points"])
    return df.rename(columns={"twin_rel_error": "twin", "flat_rel_error": "16-job value held",
                              "xenblk_rel_error": "xen-blk model"})


def loo(section: dict) -> pd.DataFrame:
    """Leave-one-point-out errors, the twin beside the analytic models."""
    df = pd.DataFrame(section["points"])
    cols = ["series", "jobs", "measured", "twin_rel_error"] + \
        [c for c in df.columns if c.endswith("_rel_error") and c != "twin_rel_error"]
    return df[cols].rename(columns=lambda c: c.replace("_rel_error", "") if c != "series"
                           else c)


def loo_summary(section: dict) -> pd.DataFrame:
    """Within 10 %, median and largest absolute leave-one-out error of each model."""
    rows = [{"model": "twin", **section["twin"]}]
    rows += [{"model": n, **s} for n, s in section["models"].items() if "error" not in s]
    return pd.DataFrame(rows).set_index("model")


def mechanisms(section: dict) -> pd.DataFrame:
    """The twin's counters where its mechanisms part ways."""
    return pd.DataFrame(section["rows"])


def microbench(doc: dict) -> pd.DataFrame:
    """The host-cost file's measurements: per twin field its value (ns), the benchmark's
    median and interquartile range, and its source."""
    rows = []
    for field, src in doc["sources"].items():
        if not src.startswith("measured:"):
            continue
        bench = src.split()[1]
        m = doc["microbench"].get(bench, {})
        stat = src.split()[2]
        s = m.get(stat, m) if stat in ("slope", "intercept") else m
        rows.append({"field": field, "value (ns)": doc["params"][field],
                     "median (ns)": s.get("median"), "q1 (ns)": s.get("q1"),
                     "q3 (ns)": s.get("q3"), "benchmark": bench})
    return pd.DataFrame(rows).set_index("field")
