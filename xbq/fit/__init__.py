"""Fitting queueing models to IOPS tables with honest uncertainty.

* :func:`fit` — bounded least squares (relative errors by default), multi-start, fixed /
  bounded / shared parameters, joint fits, Jacobian errors, bootstrap, LOO and forward tests.
* :class:`FitResult` — ``report()``, ``predictions()``, ``to_json()`` / ``from_json()``.
* :func:`profile` — profile-likelihood interval of one parameter.
* :func:`compare` — the model comparison table.
"""

from xbq.fit.compare import compare
from xbq.fit.core import build_problems, fit
from xbq.fit.profile import profile
from xbq.fit.result import FitResult, aicc

__all__ = ["FitResult", "aicc", "build_problems", "compare", "fit", "profile"]
