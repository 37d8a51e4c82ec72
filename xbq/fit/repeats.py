"""Repetitions: rows of one series at the same concurrency become one point with its spread.

``xbq measure --reps 3`` writes three rows per (mode, jobs). A fit takes their mean as the
point and, when every point has at least :data:`MIN_REPS_SE` repetitions and some spread,
weights it by ``1/SE²`` of that mean (``SE = sample std / sqrt(n)``); otherwise it fits the
means with the requested (relative or absolute) errors, reports each mean's standard error,
and says why. (With three repetitions a sample standard deviation is itself uncertain by a
factor of two or more either way, so weights drawn from it would let chance pick the points
that dominate.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from xbq.errors import XbqError

#: A standard error below this fraction of its mean is rounding, not spread: zero.
ZERO_SPREAD = 1e-9
#: Repetitions every point needs before its standard error weights the fit.
MIN_REPS_SE = 5
#: Columns that must agree between repetitions of one point (they describe the configuration).
SAME_POINT_COLUMNS = ("queues", "vcpus")


@dataclass(frozen=True)
class Means:
    """The points of one series after averaging its repetitions.

    Attributes
    ----------
    x : numpy.ndarray
        Distinct concurrency values, ascending.
    y : numpy.ndarray
        Mean throughput at each ``x``.
    se : numpy.ndarray
        Standard error of each mean (sample std / sqrt(n)); NaN where ``n`` is 1, 0 where
        the repetitions agree to :data:`ZERO_SPREAD` of their mean.
    n : numpy.ndarray
        Repetitions (rows) behind each mean.
    """

    x: np.ndarray
    y: np.ndarray
    se: np.ndarray
    n: np.ndarray


def has_repetitions(xs: dict[str, np.ndarray]) -> bool:
    """True when some series has two or more rows at the same concurrency."""
    return any(np.unique(v).size < v.size for v in xs.values())


def check_repetitions(part: pd.DataFrame, x: str, name: str) -> None:
    """Refuse rows at one ``x`` that are not repetitions of one configuration.

    Parameters
    ----------
    part : pandas.DataFrame
        The rows of one series.
    x : str
        The concurrency column.
    name : str
        The series, for the message.

    Raises
    ------
    XbqError
        Rows at the same ``x`` differ in ``queues`` or ``vcpus``, or repeat a ``rep`` number.
    """
    for col in SAME_POINT_COLUMNS:
        if col in part.columns and col != x:
            varies = part.groupby(x)[col].nunique() > 1
            if varies.any():
                at = float(varies.index[varies.to_numpy()][0])
                raise XbqError(f"series {name!r}: rows at {x}={at:g} differ in {col!r}, so "
                               "they are not repetitions of one point; split the table or "
                               "name a --series column that separates them")
    if "rep" in part.columns and x != "rep":
        dup = part.duplicated([x, "rep"])
        if dup.any():
            at = float(part.loc[dup, x].iloc[0])
            raise XbqError(f"series {name!r}: two rows at {x}={at:g} have the same rep, so "
                           "the table mixes configurations; split it or name a --series "
                           "column that separates them")


def point_means(x: np.ndarray, y: np.ndarray) -> Means:
    """Average the rows of one series that share a concurrency value.

    Parameters
    ----------
    x, y : numpy.ndarray
        Concurrency and throughput of each row.

    Returns
    -------
    Means
    """
    ux, inv, n = np.unique(x, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, weights=y) / n
    ss = np.bincount(inv, weights=(y - mean[inv]) ** 2)
    sd = np.sqrt(ss / np.maximum(n - 1, 1))
    se = sd / np.sqrt(n)
    se = np.where(se > ZERO_SPREAD * np.abs(mean), se, 0.0)
    se = np.where(n >= 2, se, np.nan)
    return Means(ux, mean, se, n)


def se_weighting(means: dict[str, Means], weighting: str) -> tuple[bool, str]:
    """Whether the means can be weighted by their standard errors, and the report's line.

    Parameters
    ----------
    means : dict of str to Means
        The averaged points of every series of the fit.
    weighting : str
        The requested weighting: ``auto`` (the standard errors when they can, else relative
        errors), or ``relative`` / ``absolute``, used as asked.

    Returns
    -------
    (bool, str)
        True when every point has at least :data:`MIN_REPS_SE` repetitions and a positive
        standard error; and a line such as "5 repetitions per point: fitted the means,
        weighted by their standard errors".
    """
    n = np.concatenate([m.n for m in means.values()])
    se = np.concatenate([m.se for m in means.values()])
    lo, hi = int(n.min()), int(n.max())
    head = (f"{lo}" if lo == hi else f"{lo}-{hi}") + " repetitions per point: fitted the means"
    if weighting != "auto":
        return False, f"{head} with {weighting} errors, as asked (standard errors reported)"
    weak = int(np.sum((n < MIN_REPS_SE) | ~(se > 0)))
    if weak == 0:
        return True, head + ", weighted by their standard errors"
    return False, (f"{head} with relative errors, unweighted by their spread ({weak} of "
                   f"{n.size} points have fewer than {MIN_REPS_SE} repetitions or zero "
                   "spread)")
