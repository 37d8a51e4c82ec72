"""A sweep file: an engine, fixed settings, axes to cross, replications, the output.

TOML (or JSON) with these keys::

    engine = "des"                 # or "native"
    out = "whatif.csv"             # optional: the results store (.csv or .parquet)
    seeds = 10                     # optional: replications, seeds seed, seed+1, ...
    params = "data/calibrated/des-params.json"   # des only, optional: the base costs
                                   # (relative: to the file, else the working directory,
                                   # else the checkout)

    [fixed]                        # settings every point shares
    queues = 16
    vcpus = 16
    duration = 0.05

    [axes]                         # crossed: every combination is a point
    mode = ["sq", "mq"]
    jobs = [1, 4, 8, 16, 32, 64]
    lock_mcs = [0, 1]              # des: any DesParams field (a *_ns cost, a switch)

An axis or fixed key is an argument of the engine (:data:`ENGINE_ARGS`) or, for the twin, a
:class:`~xbq.engines.des.params.DesParams` field. Everything is checked before any point runs;
a bad file gets one line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from xbq.checks import read_config
from xbq.engines.des.params import FIELDS as DES_FIELDS
from xbq.engines.schema import point_key
from xbq.errors import XbqError

#: Engine arguments a sweep may set, by engine, with their defaults.
ENGINE_ARGS = {
    "des": {"mode": "mq", "jobs": 1, "queues": 16, "vcpus": 16, "iodepth": 64,
            "duration": 0.05, "warmup": None, "seed": 1, "bssplit": None, "rwmixread": None},
    "native": {"mode": "mq", "jobs": 1, "queues": 4, "vcpus": 16, "iodepth": 32,
               "device": "null", "ring_page_order": 0, "lock": "ticket", "duration": 1.0,
               "warmup": 0.3, "seed": 0, "bssplit": None, "rwmixread": None},
}
TOP_KEYS = {"engine", "out", "seeds", "params", "fixed", "axes", "name"}
#: Most points one sweep may hold (a typo in an axis should not start a million runs).
MAX_POINTS = 100_000


@dataclass
class SweepSpec:
    """A checked sweep (see the module docstring)."""

    engine: str
    fixed: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)
    seeds: int = 1
    out: str | None = None
    params: str | None = None
    name: str = "sweep"

    def base_params(self) -> dict | None:
        """The twin's base costs (the ``params`` file read, or None for the defaults)."""
        if self.params is None:
            return None
        from xbq.engines.des.params import load_params

        return load_params(self.params).to_dict()

    def points(self) -> list[dict]:
        """Every point's configuration: defaults, fixed, one value per axis, the seed, and
        its ``point_key`` (a hash of all of it, the base costs' values included). Axes vary
        slowest first, seeds fastest."""
        base = {**{k: v for k, v in ENGINE_ARGS[self.engine].items() if v is not None},
                **self.fixed}
        names = list(self.axes)
        costs = self.base_params()
        out = []
        for combo in itertools.product(*(self.axes[n] for n in names)):
            cfg = {**base, **dict(zip(names, combo, strict=True))}
            for rep in range(self.seeds):
                point = {**cfg, "seed": int(cfg.get("seed", 0)) + rep, "rep": rep}
                key = point_key({"engine": self.engine, "base_params": costs, **point})
                out.append({"engine": self.engine, "base_params": costs, **point,
                            "point_key": key})
        return out

    def varied(self) -> list[str]:
        """The settings that differ between points (axes), without the seed."""
        return [n for n in self.axes if n not in ("seed",)]


def _check_value(engine: str, name: str, value, where: str) -> None:
    if name in ENGINE_ARGS[engine]:
        return
    if engine == "des" and name in DES_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise XbqError(f"{where}: {name} is a cost or switch of the twin and takes a "
                           f"number, not {value!r}")
        return
    allowed = sorted(ENGINE_ARGS[engine]) + (["<any DesParams field>"] if engine == "des"
                                             else [])
    raise XbqError(f"{where}: {name!r} is not a setting of the {engine} engine (choose from "
                   f"{', '.join(allowed)})")


def spec_from_dict(data: dict, where: str = "sweep") -> SweepSpec:
    """Check a parsed sweep file and return its :class:`SweepSpec`."""
    if not isinstance(data, dict):
        raise XbqError(f"{where}: a sweep is a table of settings")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise XbqError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: "
                       f"{', '.join(sorted(TOP_KEYS))})")
    engine = data.get("engine")
    if engine not in ENGINE_ARGS:
        raise XbqError(f"{where}: engine must be 'des' or 'native', not {engine!r}")
    fixed, axes = data.get("fixed", {}), data.get("axes", {})
    if not isinstance(fixed, dict) or not isinstance(axes, dict):
        raise XbqError(f"{where}: [fixed] and [axes] must be tables")
    for name, value in fixed.items():
        _check_value(engine, name, value, f"{where} [fixed]")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise XbqError(f"{where} [axes]: {name} must be a non-empty list of values")
        if name in fixed:
            raise XbqError(f"{where}: {name} is both fixed and an axis")
        for v in values:
            _check_value(engine, name, v, f"{where} [axes]")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 1000:
        raise XbqError(f"{where}: seeds must be an integer from 1 to 1000, not {seeds!r}")
    params = data.get("params")
    if params is not None and (engine != "des" or not isinstance(params, str)):
        raise XbqError(f"{where}: params (a cost file) is for the des engine, as a path")
    spec = SweepSpec(engine, dict(fixed), dict(axes), seeds, data.get("out"), params,
                     str(data.get("name", "sweep")))
    spec.base_params()  # a missing or bad cost file: one line, now
    n = seeds
    for values in axes.values():
        n *= len(values)
    if n > MAX_POINTS:
        raise XbqError(f"{where}: {n} points exceed the limit of {MAX_POINTS}")
    return spec


def load_spec(path) -> SweepSpec:
    """Read a sweep file (``.toml`` or ``.json``); one line for anything wrong with it."""
    p = Path(path)
    data = read_config(p, default="toml")
    params = data.get("params") if isinstance(data, dict) else None
    if isinstance(params, str) and not Path(params).is_absolute():
        from xbq.study.paths import REPO_DIR

        found = [c for c in (p.parent / params, Path.cwd() / params, REPO_DIR / params)
                 if c.is_file()]
        data = {**data, "params": str(found[0]) if found else params}
    return spec_from_dict(data, str(p))
