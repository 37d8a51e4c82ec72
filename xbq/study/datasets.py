"""Tidy IOPS tables: the published seed table and any measurement of the same shape.

A tidy IOPS table has one row per measured point: a ``series`` (driver or configuration),
the concurrency variable (``jobs`` by default; ``queues`` or ``cores`` also work), and
``iops`` (aggregate read+write I/O operations per second). Known constants of the machine,
``queues`` and ``vcpus``, ride along as columns when the data has them. Output of ``xbq
measure`` and ``xbq simulate`` reads as it is written: its ``mode`` is the series, and its
repetitions (several rows at one series and ``jobs``) are fitted as means with their spread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xbq.errors import XbqError
from xbq.fit.core import X_ALIASES
from xbq.study.paths import seed_csv

SEED_COLUMNS = ("series", "jobs", "queues", "vcpus", "iops")
#: Largest concurrency and throughput accepted: beyond them the models' sums overflow (and an
#: exact MVA over 10**6 customers is already minutes of work).
MAX_X = 1e6
MAX_IOPS = 1e15
#: Columns that carry constants of the machine, checked like the data when present.
CONSTANT_COLUMNS = ("queues", "vcpus")
#: The series column of ``xbq measure`` and ``xbq simulate`` output, used when there is no
#: ``series`` column.
SERIES_FALLBACK = "mode"
#: Throughput columns tried, in order, when the table has no ``iops`` column.
Y_ALIASES = ("iops", "throughput", "ops_per_s", "ops", "speedup")


def load_seed() -> pd.DataFrame:
    """Return the 2015 multi-queue RFC table as a tidy frame.

    Returns
    -------
    pandas.DataFrame
        Columns ``series`` (``single_ring`` or ``multi_ring``), ``jobs`` (fio numjobs),
        ``queues`` (rings used), ``vcpus`` (guest vCPUs) and ``iops`` (read+write IOPS,
        rounded to thousands by the source). Provenance: ``data/seed/xen-blkmq-rfc-2015.md``.

    Examples
    --------
    >>> seed = load_seed()
    >>> seed.groupby("series")["iops"].max().to_dict()
    {'multi_ring': 372000, 'single_ring': 95000}
    """
    return load_iops_table(seed_csv(), required=SEED_COLUMNS)


def load_iops_table(
    path: str | Path,
    *,
    x: str = "jobs",
    y: str = "iops",
    series: str | None = "series",
    required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Read and check a tidy IOPS table from CSV or Parquet.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` file.
    x : str
        Name of the concurrency column (jobs, queues, cores, ...); must be positive. The
        default ``jobs``, when absent, falls back to ``cores``, ``threads`` or ``cpus``.
    y : str
        Name of the throughput column, in any unit (IOPS, ops/s, speed-up); it is returned
        as ``iops``. The default ``iops``, when absent, falls back to ``throughput``,
        ``ops_per_s``, ``ops`` or ``speedup``.
    series : str or None
        Name of the series column. The default ``series``, when absent, falls back to
        ``mode`` (``sq``/``mq``: what ``xbq measure`` and ``xbq simulate`` write); without
        either every row joins one series called ``all``. ``None`` means one series ``all``.
    required : tuple of str
        Further columns that must be present.

    Returns
    -------
    pandas.DataFrame
        The table sorted by series and ``x``, with a ``series`` column always present.

    Raises
    ------
    XbqError
        A missing file or column, a non-numeric or non-positive ``x`` or ``iops``, or an
        empty table; the message names the file and the problem in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise XbqError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, comment="#")
    except Exception as exc:  # pandas raises many types for unreadable input
        raise XbqError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from None
    if x == "jobs" and x not in df.columns:
        x = next((c for c in X_ALIASES if c in df.columns), x)
    if y == "iops" and y not in df.columns:
        y = next((c for c in Y_ALIASES if c in df.columns), y)
    if y != "iops":
        if "iops" in df.columns and y in df.columns:
            raise XbqError(f"{path}: both 'iops' and {y!r} columns; drop one")
        df = df.rename(columns={y: "iops"})
        y = "iops"
    need = [x, "iops", *required]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise XbqError(f"{path}: missing column(s) {', '.join(missing)}; "
                       f"has {', '.join(df.columns)}")
    if df.empty:
        raise XbqError(f"{path}: the table has no rows")
    limits = {x: MAX_X, "iops": MAX_IOPS}
    for col in (x, "iops", *(c for c in CONSTANT_COLUMNS if c in df.columns and c != x)):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            raise XbqError(f"{path}: column {col!r} has non-numeric or empty values")
        if not np.isfinite(values).all():
            raise XbqError(f"{path}: column {col!r} has a non-finite value (inf)")
        if (values <= 0).any():
            raise XbqError(f"{path}: column {col!r} must be positive (found {values.min():g})")
        top = limits.get(col, MAX_X)
        if (values > top).any():
            raise XbqError(f"{path}: column {col!r} has {values.max():g}, beyond the "
                           f"{top:g} the models can evaluate")
        df[col] = values
    if series == "series" and series not in df.columns and SERIES_FALLBACK in df.columns:
        series = SERIES_FALLBACK
    if series is None or series not in df.columns:
        df["series"] = "all"
    elif series != "series":
        df = df.rename(columns={series: "series"})
    df["series"] = df["series"].astype(str)
    return df.sort_values(["series", x], kind="stable").reset_index(drop=True)


def summarize(df) -> str:
    """A wide, human-readable view of a tidy IOPS table: IOPS by series and jobs (thousands),
    each series' peak, its speed-up over one job and what is left of it at the most jobs."""
    wide = df.pivot_table(index="series", columns="jobs", values="iops", aggfunc="mean")
    lines = ["IOPS by fio jobs (k = thousand):"]
    header = "series".ljust(14) + "".join(f"{int(j):>8}" for j in wide.columns)
    lines.append(header)
    for name, row in wide.iterrows():
        lines.append(name.ljust(14) + "".join(f"{v / 1e3:>7.0f}k" for v in row.values))
    lines.append("")
    for name, row in wide.iterrows():
        peak_jobs = row.idxmax()
        lines.append(
            f"{name}: peak {row.max() / 1e3:.0f}k at {int(peak_jobs)} jobs = "
            f"{row.max() / row.iloc[0]:.2f}x one job; at {int(row.index[-1])} jobs "
            f"{row.iloc[-1] / row.max():.0%} of peak"
        )
    return "\n".join(lines)
