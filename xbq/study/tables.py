"""The model-comparison tables of ``docs/models.md``, printed for the seed.

``python -m xbq.study.tables [--bootstrap N] [--seed S]`` prints the comparison table, the
residual table and the reports of three models (USL with cap, ticket lock, xen-blk).
"""

from __future__ import annotations

import argparse

import pandas as pd

from xbq.fit.compare import compare, markdown_table, residual_table
from xbq.study.datasets import load_seed

#: Models whose full reports follow the tables.
REPORTED = ("usl-capped", "ticket", "xenblk")


def models_markdown(bootstrap: int = 1000, seed: int = 0) -> str:
    """The tables and reports for the seed table, as markdown."""
    table, fits = compare(load_seed(), bootstrap=bootstrap, seed=seed, return_fits=True)
    parts = [markdown_table(table), residual_table(fits)]
    parts += [f"<details><summary>{name} report</summary>\n\n```\n{fits[name].report()}\n```"
              "\n</details>" for name in REPORTED]
    return "\n\n".join(parts) + "\n"


def parameter_table(fits: dict) -> pd.DataFrame:
    """Every fitted parameter of every model with its standard error and bootstrap interval.

    Parameters
    ----------
    fits : dict
        ``{model name: FitResult}`` (as :func:`xbq.fit.compare` returns with
        ``return_fits=True``).

    Returns
    -------
    pandas.DataFrame
        ``model, series, parameter, value, stderr, ci_lo, ci_hi`` (fixed parameters, which
        have no error, are left out; an interval is NaN without bootstrap resamples).
    """
    rows = []
    for name, res in fits.items():
        for s, e in res.series.items():
            for par, se in (e.get("stderr") or {}).items():
                lo, hi = (e.get("ci") or {}).get(par, (float("nan"), float("nan")))
                rows.append({"model": name, "series": s, "parameter": par,
                             "value": e["params"][par], "stderr": se, "ci_lo": lo,
                             "ci_hi": hi})
    return pd.DataFrame(rows, columns=["model", "series", "parameter", "value", "stderr",
                                       "ci_lo", "ci_hi"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m xbq.study.tables")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(models_markdown(args.bootstrap, args.seed), end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
