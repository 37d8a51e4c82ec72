"""``FitResult``: statistics, a readable report, a tidy prediction frame and a JSON round trip."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from xbq.models.registry import get_model


def _f(v):
    """JSON-safe float (None for nan/inf/None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def aicc(rss: float, n: int, k: int) -> tuple[float | None, float | None, str | None]:
    """Gaussian AIC and AICc of a least-squares fit; ``k`` counts sigma too.

    Returns ``(aic, aicc, note)``; ``aicc`` is None with a note when ``n - k - 1 <= 0``.
    """
    if rss <= 0 or n <= 0:
        return None, None, "zero residual: information criteria undefined"
    aic = n * math.log(rss / n) + 2 * k
    if n - k - 1 <= 0:
        return aic, None, f"AICc undefined: n - k - 1 = {n - k - 1} <= 0 (n={n}, k={k} with sigma)"
    return aic, aic + 2 * k * (k + 1) / (n - k - 1), None


def at_bound(value: float, lower: float, upper: float, scale: float = 0.0) -> bool:
    """True when ``value`` sits on ``lower`` or ``upper``.

    The tolerance is 1e-6 of the parameter's scale (its typical value ``scale``, the value
    or the bound, whichever is largest), so ``beta = 1e-10`` counts as at 0 when beta's
    typical size is 1e-3.
    """
    return any(np.isfinite(b) and abs(value - b) <= 1e-6 * max(abs(b), abs(value), abs(scale))
               + 1e-300 for b in (lower, upper))


def _fmt(v, spec: str = ".4g") -> str:
    """``v`` formatted, or ``n/a`` when the statistic is missing or not finite."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


#: The report's words for each weighting.
WEIGHTING_WORDS = {"relative": "relative errors", "absolute": "absolute errors",
                   "se": "standard errors of the means"}


def _data(prob, s: str) -> dict:
    """The fitted points of series ``s``: x and y, with ``reps`` and ``se`` (None where one
    repetition) when the table repeated points."""
    out = {"x": prob.x[s].tolist(), "y": prob.y[s].tolist()}
    if prob.reps is not None:
        out["reps"] = prob.reps[s].astype(int).tolist()
        out["se"] = [_f(v) for v in prob.sigma[s]]
    return out


def _r2(y, yhat):
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    sst = float(np.sum((y - y.mean()) ** 2))
    return None if sst == 0 else 1.0 - float(np.sum((y - yhat) ** 2)) / sst


@dataclass
class FitResult:
    """The outcome of :func:`xbq.fit.fit`, as plain data (so it survives JSON).

    Attributes
    ----------
    model, x, joint, weighting : fit settings.
    groups : list of dict
        One per fitted problem (each series, or one joint problem): ``series``, ``free``
        (``[name, series-or-None]``), ``theta``, ``cov``, ``lower``, ``upper``, ``base``
        (full parameter rows per series), ``data`` (x and y per series), statistics.
    series : dict
        Per-series summary (``params``, ``stderr``, ``ci``, ``r2``, ``rmse``, ``loo_rmse``,
        ``aicc``, ``peak_x``, ``peak_iops``, ``peak_ci``, ``forward``).
    r2 : float
        R² over all points of all series (IOPS, unweighted).
    warnings : list of str
    points : str or None
        How repeated points were fitted (their means, weighted by their standard errors or
        not); None when the table has one row per point. ``weighting`` is ``"se"`` when the
        standard errors weighted the fit.
    """

    model: str
    x: str
    joint: bool
    weighting: str
    groups: list
    series: dict
    r2: float | None
    warnings: list = field(default_factory=list)
    bootstrap: dict = field(default_factory=dict)
    points: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_groups(cls, spec, x, joint, weighting, groups, B, kind, seed, level):
        out_groups, per_series, warnings = [], {}, []
        all_y, all_hat = [], []
        for g in groups:
            prob = g["problem"]
            theta = g["theta"]
            pred = prob.predict(theta[None, :])
            n, k = prob.n, prob.k
            aic, aicc_v, note = aicc(g["rss_w"], n, k + 1)
            cov = g["cov"]
            se = (np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None
                  else np.full(k, np.nan))
            boot = g.get("boot")
            qs = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
            ci = np.percentile(boot["theta"], qs, axis=0).T if boot else None
            tag = f"{'+'.join(prob.series)}: "
            gw = [tag + w for w in g["warnings"]]
            typical = prob.start_values()
            unmoved = []
            for j, label in enumerate(prob.labels):
                if at_bound(theta[j], prob.lower[j], prob.upper[j], typical[j]):
                    gw.append(f"{tag}{label} is at a bound ({theta[j]:.6g}); its error is not "
                              "meaningful")
                elif g["unmoved"][j]:
                    unmoved.append(label)
            # a parameter still at its start was never fitted: no standard error for it,
            # and when no parameter moved nothing was fitted: the fit failed, no R². (A
            # model made of regimes, min(...), leaves a regime's parameter unmoved where
            # its regime is inactive over the data; the rest of the curve is still fitted.)
            failed = (f"{', '.join(unmoved)} never moved from its start value (the data do "
                      "not constrain it)") if unmoved and len(unmoved) == k else None
            if failed:
                gw.append(f"{tag}fit failed: {failed}")
            elif unmoved:
                gw.append(f"{tag}{', '.join(unmoved)} never moved from its start value: "
                          "not determined by the data (no standard error)")
            if boot is not None:
                for j, label in enumerate(prob.labels):
                    if boot["at_bound"][j] > 0.2:
                        gw.append(f"{tag}{label}: {boot['at_bound'][j]:.0%} of bootstrap "
                                  "refits end at a bound")
            loo = g.get("loo", {})
            fwd = g.get("forward", {})
            offset = 0
            for s in prob.series:
                ys, hat = prob.y[s], pred[s][0]
                m = ys.size
                sl = slice(offset, offset + m)
                offset += m
                all_y.append(ys)
                all_hat.append(hat)
                names = prob.spec.names
                row = prob.rows(theta[None, :])[s][0]
                params = {nm: _f(row[i]) for i, nm in enumerate(names)}
                stderr, cis = {}, {}
                for j, (nm, owner) in enumerate(prob.free):
                    if owner is None or owner == s:
                        blind = prob.labels[j] in unmoved  # never fitted: no error, no CI
                        stderr[nm] = None if blind else _f(se[j])
                        cis[nm] = [_f(ci[j, 0]), _f(ci[j, 1])] \
                            if ci is not None and not blind else None
                entry = dict(params=params, free=sorted(stderr), stderr=stderr, ci=cis,
                             r2=None if failed else _f(_r2(ys, hat)),
                             **({"failed": failed} if failed else {}),
                             rmse=_f(np.sqrt(np.mean((ys - hat) ** 2))),
                             aic=_f(aic), aicc=_f(aicc_v), aicc_note=note,
                             n=int(m), k=int(k), n_fit=int(n),
                             peak_x=g["peaks"][s][0], peak_iops=g["peaks"][s][1])
                if joint and len(prob.series) > 1:
                    entry["aicc_note"] = ("AICc of the joint fit (all series together)"
                                          + (f"; {note}" if note else ""))
                if "pred" in loo:
                    lp = loo["pred"][sl]
                    entry["loo_rmse"] = _f(np.sqrt(np.mean((lp - ys) ** 2)))
                    entry["loo"] = {"x": prob.x[s].tolist(), "pred": lp.tolist(),
                                    "rel_err": ((lp - ys) / ys).tolist()}
                else:
                    entry["loo_rmse"] = None
                entry["loo_note"] = loo.get("note")
                if "pred" in fwd:
                    t = fwd["test"][sl]
                    fp = fwd["pred"][sl]
                    if t.any():
                        err = (fp[t] - ys[t]) / ys[t]
                        entry["forward"] = {"x": prob.x[s][t].tolist(), "pred": fp[t].tolist(),
                                            "obs": ys[t].tolist(), "rel_err": err.tolist(),
                                            "rmse": _f(np.sqrt(np.mean((fp[t] - ys[t]) ** 2))),
                                            "undetermined": fwd.get("undetermined", [])}
                    else:
                        entry["forward"] = None
                else:
                    entry["forward"] = None
                    entry["forward_note"] = fwd.get("note")
                if boot is not None:
                    px = boot["peak_x"][s]
                    entry["peak_ci"] = {
                        "x": [_f(np.percentile(px, qs[0], method="lower")),
                              _f(np.percentile(px, qs[1], method="higher"))],
                        "iops": [_f(v) for v in np.percentile(boot["peak_y"][s], qs)]}
                    entry["band"] = {"x": g["grid"][s].tolist(),
                                     "lo": boot["bands"][s][0].tolist(),
                                     "hi": boot["bands"][s][1].tolist()}
                else:
                    entry["peak_ci"] = None
                per_series[s] = entry
            warnings += gw
            corr = None
            if cov is not None:
                d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
                corr = (cov / np.outer(d, d)).tolist()
            out_groups.append(dict(
                series=list(prob.series), free=[list(f) for f in prob.free],
                labels=prob.labels, theta=theta.tolist(), stderr=[_f(v) for v in se],
                cov=None if cov is None else cov.tolist(), corr=corr,
                lower=[_f(v) for v in prob.lower], upper=[_f(v) for v in prob.upper],
                base={s: prob.base[s].tolist() for s in prob.series},
                data={s: _data(prob, s) for s in prob.series},
                rss_w=g["rss_w"], n=n, k=k, aic=_f(aic), aicc=_f(aicc_v), aicc_note=note,
                success=g["success"] and not failed, nfev=g["nfev"],
                **({"unmoved": unmoved} if unmoved else {}),
                ci=None if ci is None else ci.tolist()))
        failed = any(e.get("failed") for e in per_series.values())
        r2 = None if failed else _r2(np.concatenate(all_y), np.concatenate(all_hat))
        boot_info = dict(n=int(B), kind=kind, seed=int(seed), level=level) if B else {}
        return cls(spec.name, x, bool(joint), weighting, out_groups, per_series, _f(r2),
                   warnings, boot_info)

    # ------------------------------------------------------------------ use
    def params(self, series: str) -> dict:
        """Full parameter values of one series."""
        return dict(self.series[series]["params"])

    def predict(self, series: str, x) -> np.ndarray:
        """Fitted IOPS of ``series`` at concurrency ``x``."""
        spec = get_model(self.model)
        row = np.array([[self.series[series]["params"][n] for n in spec.names]], float)
        return spec.evaluate(np.atleast_1d(np.asarray(x, float)), row)[0]

    def predictions(self, grid: int | None = None) -> pd.DataFrame:
        """Tidy frame for plotting: data points with fit and residuals, plus a fitted curve.

        Columns: ``model``, ``series``, ``kind`` (``data`` or ``curve``), ``x``, ``iops``
        (observed; NaN on the curve), ``fit``, ``residual`` (IOPS), ``rel_residual``,
        ``lo``/``hi`` (bootstrap band on the curve when available).
        """
        rows = []
        for g in self.groups:
            for s in g["series"]:
                xs = np.asarray(g["data"][s]["x"], float)
                ys = np.asarray(g["data"][s]["y"], float)
                hat = self.predict(s, xs)
                for xi, yi, hi in zip(xs, ys, hat, strict=True):
                    rows.append(dict(model=self.model, series=s, kind="data", x=xi, iops=yi,
                                     fit=hi, residual=yi - hi, rel_residual=(yi - hi) / hi,
                                     lo=np.nan, hi=np.nan))
                band = self.series[s].get("band")
                if band is not None:
                    gx = np.asarray(band["x"], float)
                    lo, hi = band["lo"], band["hi"]
                else:
                    top = xs.max()
                    gx = (np.arange(1.0, top + 1.0) if grid is None and top <= 1024
                          else np.geomspace(1.0, top, grid or 200))
                    lo = hi = [np.nan] * gx.size
                curve = self.predict(s, gx)
                for xi, fi, li, ui in zip(gx, curve, lo, hi, strict=True):
                    rows.append(dict(model=self.model, series=s, kind="curve", x=xi,
                                     iops=np.nan, fit=fi, residual=np.nan,
                                     rel_residual=np.nan, lo=li, hi=ui))
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """The JSON object of ``xbq fit --json`` (also what :meth:`from_json` reads)."""
        out = dict(model=self.model, x=self.x, joint=self.joint, weighting=self.weighting,
                   r2=self.r2, series=self.series, groups=self.groups,
                   warnings=self.warnings, bootstrap=self.bootstrap)
        if self.points is not None:
            out["points"] = self.points
        return out

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> FitResult:
        d = json.loads(text)
        return cls(d["model"], d["x"], d["joint"], d["weighting"], d["groups"], d["series"],
                   d["r2"], d.get("warnings", []), d.get("bootstrap", {}), d.get("points"))

    # ------------------------------------------------------------------ report
    def report(self) -> str:
        """A readable report in the spirit of lmfit's ``fit_report``."""
        spec = get_model(self.model)
        L = [f"[[Model]] {self.model}: {spec.description}",
             f"    x = {self.x}, "
             f"weighting = {WEIGHTING_WORDS.get(self.weighting, f'{self.weighting} errors')}, "
             f"{'joint fit' if self.joint else 'one fit per series'}"]
        if self.points:
            L.append(f"    points: {self.points}")
        if self.bootstrap:
            b = self.bootstrap
            L.append(f"    bootstrap: {b['n']} {b['kind']} resamples, seed {b['seed']}, "
                     f"{b['level']:.0%} percentile intervals")
        failed = sorted({e["failed"] for e in self.series.values() if e.get("failed")})
        L.append("    FIT FAILED: " + "; ".join(failed) if failed
                 else f"    R² (all points) = {_fmt(self.r2, '.4f')}")
        for g in self.groups:
            L.append(f"[[Fit statistics]] {' + '.join(g['series'])}")
            rows = sum(sum(d.get("reps", [])) for d in g["data"].values())
            means = f" (means of {rows} rows)" if rows else ""
            L.append(f"    points = {g['n']}{means}, free parameters = {g['k']}, "
                     f"weighted RSS = {_fmt(g['rss_w'])}")
            aicc_text = _fmt(g["aicc"], ".2f") if g["aicc"] is not None \
                else f"n/a ({g['aicc_note']})"
            L.append(f"    AIC = {_fmt(g['aic'], '.2f')}, AICc = {aicc_text}"
                     if g["aic"] is not None else f"    AICc: {g['aicc_note']}")
            L.append("[[Variables]]")
            ci = g.get("ci")
            for j, label in enumerate(g["labels"]):
                name = g["free"][j][0]
                unit = spec.param(name).unit
                val, se = g["theta"][j], g["stderr"][j]
                txt = f"    {label:<22} = {_fmt(val, '<12.6g')}"
                lo, hi = g["lower"][j], g["upper"][j]
                if at_bound(val, -math.inf if lo is None else lo, math.inf if hi is None else hi,
                            spec.param(name).default):
                    txt += " at its bound: no standard error"
                elif label in g.get("unmoved", ()):
                    txt += " never moved from its start: not determined, no standard error"
                elif se is not None:
                    rel = f" ({abs(se / val):.1%})" if val else ""
                    txt += f" +/- {_fmt(se, '<10.4g')}{rel}"
                if ci is not None:
                    txt += f"  [{_fmt(ci[j][0])}, {_fmt(ci[j][1])}]"
                L.append(txt + f"  {unit}")
            fixed = []
            for i, p in enumerate(spec.params):
                if any(f[0] == p.name for f in g["free"]):
                    continue
                vals = {s: g["base"][s][i] for s in g["series"]}
                if len(set(vals.values())) == 1:
                    fixed.append(f"{p.name}={next(iter(vals.values())):g}")
                else:
                    fixed += [f"{p.name}[{s}]={v:g}" for s, v in vals.items()]
            if fixed:
                L.append("    fixed: " + ", ".join(dict.fromkeys(fixed)))
            if g.get("corr"):
                pairs = []
                c = np.asarray(g["corr"])
                for i in range(len(c)):
                    for j in range(i + 1, len(c)):
                        if abs(c[i, j]) >= 0.5:
                            pairs.append((abs(c[i, j]), g["labels"][i], g["labels"][j], c[i, j]))
                if pairs:
                    L.append("[[Correlations]] (|corr| >= 0.5)")
                    for _, a, b, v in sorted(pairs, reverse=True):
                        L.append(f"    C({a}, {b}) = {v:+.3f}")
        L.append("[[Series]]")
        for s, e in self.series.items():
            peak = f"peak {_fmt(e.get('peak_iops'))} IOPS at {self.x}={_fmt(e.get('peak_x'), 'g')}"
            if e.get("peak_ci"):
                pc = e["peak_ci"]
                peak += (f" ({self.x} [{_fmt(pc['x'][0], 'g')}, {_fmt(pc['x'][1], 'g')}], "
                         f"IOPS [{_fmt(pc['iops'][0])}, {_fmt(pc['iops'][1])}])")
            fit_q = "fit failed" if e.get("failed") else f"R² = {_fmt(e.get('r2'), '.4f')}"
            L.append(f"    {s}: {fit_q}, RMSE = {_fmt(e.get('rmse'))}, "
                     f"LOO RMSE = {_fmt(e.get('loo_rmse'))}; {peak}")
            if e.get("forward"):
                f = e["forward"]
                errs = ", ".join(f"{_fmt(x, 'g')}: {_fmt(r, '+.1%')}" for x, r in
                                 zip(f["x"], f["rel_err"], strict=True))
                blind = f.get("undetermined") or []
                note = (f" (not determined by the training points: {', '.join(blind)})"
                        if blind else "")
                L.append(f"      forward test (fit {self.x} <= 16): {errs}{note}")
        if self.warnings:
            L.append("[[Warnings]]")
            L += [f"    {w}" for w in self.warnings]
        return "\n".join(line for line in L if line != "")
