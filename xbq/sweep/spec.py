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
    duration_s = 0.05

    [axes]                         # crossed: every combination is a point
    mode = ["sq", "mq"]
    jobs = [1, 4, 8, 16, 32, 64]
    lock_mcs = [false, true]       # des: any DesParams field (a *_ns cost, a switch, a count)

A setting is a field of the engine's point (:class:`~xbq.engines.des.point.DesPoint`,
:class:`~xbq.engines.native.point.NativePoint`; ``duration`` and ``warmup`` are accepted for
``duration_s`` and ``warmup_s``) or, for the twin, a
:class:`~xbq.engines.des.params.DesParams` field. The file is checked whole by
:class:`SweepFile` and every point by its engine's model before anything starts: a wrong
type, a value out of the engine's range, an axis listing a value twice, a ``seed`` axis
beside ``seeds``, an ``out`` that cannot be written, or a combination the engine refuses is
one line naming the field. :func:`json_schema` is the file's JSON Schema.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from xbq.checks import Int, Text, read_config, refusal
from xbq.engines.des.params import FIELDS as DES_FIELDS
from xbq.engines.des.params import DesParams, load_params
from xbq.engines.des.point import DesPoint
from xbq.engines.native.point import NativePoint
from xbq.engines.schema import Point
from xbq.errors import XbqError
from xbq.files import check_folder, check_target

#: Each engine's point model.
POINTS = {"des": DesPoint, "native": NativePoint}
#: Older names of point fields, still accepted in sweep files.
ALIASES = {"duration": "duration_s", "warmup": "warmup_s"}
#: Point fields a sweep does not set directly (``rep`` comes from ``seeds``; the twin's
#: costs from ``params`` and its fields).
NOT_SETTINGS = ("engine", "rep", "params")
#: Most points one sweep may hold (a typo in an axis should not start a million runs).
MAX_POINTS = 100_000

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class SweepFile(BaseModel):
    """The top level of a sweep file (each setting's own type is its engine's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="xbq sweep file")

    engine: Literal["des", "native"] = Field(description="the twin (des) or real threads "
                                             "(native)")
    name: Name = Field("sweep", description="the sweep's name (letters, digits, _ . -)")
    out: Text | None = Field(None, description="results store, .csv or .parquet (relative to "
                             "the working directory)")
    seeds: Int(1, 1000) = Field(1, description="replications: seeds seed, seed+1, ...")
    params: Text | None = Field(None, description="des: the base costs, a parameter file")
    fixed: dict[str, Any] = Field(default_factory=dict, description="settings every point "
                                  "shares")
    axes: dict[str, Annotated[list[Any], Field(min_length=1, max_length=MAX_POINTS)]] = Field(
        default_factory=dict, description="settings crossed: every combination is a point")


def settings(engine: str) -> list[str]:
    """The names a sweep of ``engine`` may set: its point's fields, and the twin's costs."""
    names = [n for n in POINTS[engine].model_fields if n not in NOT_SETTINGS]
    return names + (list(DES_FIELDS) if engine == "des" else [])


@cache
def _adapter(engine: str, name: str) -> TypeAdapter:
    f = POINTS[engine].model_fields[name]
    return TypeAdapter(Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation)


def _check_value(engine: str, name: str, value, label: str):
    """``value`` as the setting ``name`` of ``engine`` holds it; one line naming ``label``
    (``sweep.toml [axes] jobs[2]``) if it cannot."""
    try:
        if name in POINTS[engine].model_fields:
            try:
                out = _adapter(engine, name).validate_python(value)
            except ValidationError as exc:
                raise refusal(exc) from None
            if name == "bssplit":
                POINTS[engine](bssplit=out)  # its own syntax check
            return out
        return getattr(DesParams(**{name: value}), name)
    except XbqError as exc:
        msg = str(exc)
        msg = msg[len(name) + 1:] if msg.startswith(name + " ") else msg
        raise XbqError(f"{label} {msg}") from None


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: the engine's point and the sweep's labels for it (the axes'
    values by their names in the file), which become columns of its row."""

    point: Point
    labels: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.point.key

    def config(self) -> dict:
        return self.point.config()


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
    source: str = "sweep"

    def base_params(self) -> DesParams | None:
        """The twin's base costs (the ``params`` file read, or None for the defaults)."""
        return None if self.params is None else load_params(self.params)

    def points(self) -> list[SweepPoint]:
        """Every point: defaults, fixed, one value per axis, the seed; axes vary slowest
        first, seeds fastest. Each is checked by its engine's model."""
        model = POINTS[self.engine]
        fields = model.model_fields
        base_params = self.base_params() or DesParams() if self.engine == "des" else None
        names = list(self.axes)
        out = []
        for combo in itertools.product(*(self.axes[n] for n in names)):
            setting = {**self.fixed, **dict(zip(names, combo, strict=True))}
            own = {k: v for k, v in setting.items() if k in fields}
            costs = {k: v for k, v in setting.items() if k not in fields}
            seed0 = own.pop("seed", fields["seed"].default)
            for rep in range(self.seeds):
                kw = {**own, "seed": seed0 + rep, "rep": rep}
                if self.engine == "des":
                    kw["params"] = base_params.replace(**costs) if costs else base_params
                try:
                    point = model(**kw)
                except XbqError as exc:
                    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in
                                      dict(zip(names, combo, strict=True)).items())
                    raise XbqError(f"{self.source}: the point "
                                   f"{shown or 'of the fixed settings'}: {exc}") from None
                labels = {k: v for k, v in setting.items() if k in self.axes}
                out.append(SweepPoint(point, labels))
        return out

    def varied(self) -> list[str]:
        """The settings that differ between points (axes), without the seed."""
        return [n for n in self.axes if n not in ("seed",)]

    def store_axes(self) -> list[str]:
        """The axes as a results store names them (flattened configuration names)."""
        fields = POINTS[self.engine].model_fields
        return [n if n in fields else f"params.{n}" for n in self.axes]


def _canonical(table: dict, where: str) -> dict:
    out = {}
    for k, v in table.items():
        name = ALIASES.get(k, k)
        if name in out:
            raise XbqError(f"{where}: {k} and {name} name the same setting")
        out[name] = v
    return out


def spec_from_dict(data, where: str = "sweep", *, base: Path | None = None) -> SweepSpec:
    """Check a parsed sweep file whole and return its :class:`SweepSpec` (one line for the
    first problem). ``base`` is the file's folder (where a relative ``params`` is looked
    for first)."""
    if not isinstance(data, dict):
        raise XbqError(f"{where}: a sweep is a table of settings, not {type(data).__name__}")
    try:
        top = SweepFile(**data)
    except ValidationError as exc:
        raise refusal(exc, where) from None
    engine = top.engine
    allowed = settings(engine)
    fixed, axes = _canonical(top.fixed, f"{where} [fixed]"), _canonical(top.axes,
                                                                        f"{where} [axes]")
    for section, table in (("[fixed]", fixed), ("[axes]", axes)):
        unknown = [k for k in table if k not in allowed]
        if unknown:
            raise XbqError(f"{where} {section}: {unknown[0]!r} is not a setting of the {engine} "
                           f"engine (choose from {', '.join(allowed)})")
    both = sorted(set(fixed) & set(axes))
    if both:
        raise XbqError(f"{where}: {both[0]} is both fixed and an axis")
    fixed = {k: _check_value(engine, k, v, f"{where} [fixed] {k}") for k, v in fixed.items()}
    checked = {}
    for name, values in axes.items():
        vals = [_check_value(engine, name, v, f"{where} [axes] {name}[{i}]")
                for i, v in enumerate(values)]
        twice = [v for i, v in enumerate(vals) if v in vals[:i]]
        if twice:
            raise XbqError(f"{where} [axes]: {name} lists {json.dumps(twice[0])} more than "
                           "once (each value is one point; use seeds for replications)")
        checked[name] = vals
    if "seed" in checked and top.seeds > 1:
        raise XbqError(f"{where}: seeds = {top.seeds} beside a seed axis would run some seeds "
                       "twice; give the seeds as the axis, or seeds = N with a fixed seed")
    n = top.seeds
    for values in checked.values():
        n *= len(values)
    if n > MAX_POINTS:
        raise XbqError(f"{where}: {n} points exceed the limit of {MAX_POINTS}")
    params = top.params
    if params is not None:
        if engine != "des":
            raise XbqError(f"{where}: params (a cost file) is for the des engine")
        params = str(_find(params, base))
    if top.out is not None:
        _check_out(Path(top.out), f"{where}: out")
    spec = SweepSpec(engine, fixed, checked, top.seeds, top.out, params, top.name, where)
    spec.points()  # every point checked by its engine's model, now
    return spec


def _find(params: str, base: Path | None) -> Path:
    """A relative cost file: beside the sweep file, else in the working directory, else in
    the checkout."""
    p = Path(params)
    if p.is_absolute():
        return p
    from xbq.study.paths import REPO_DIR

    found = [c for c in ((base / p) if base else None, Path.cwd() / p, REPO_DIR / p)
             if c is not None and c.is_file()]
    return found[0] if found else p


def _check_out(out: Path, where: str) -> None:
    if out.suffix not in (".csv", ".parquet"):
        raise XbqError(f"{where} {out} must end in .csv or .parquet")
    try:
        check_folder(out)
        check_target(out)
    except XbqError as exc:
        raise XbqError(f"{where}: {exc}") from None


def load_spec(path) -> SweepSpec:
    """Read a sweep file (``.toml`` or ``.json``); one line for anything wrong with it."""
    p = Path(path)
    return spec_from_dict(read_config(p, default="toml"), str(p), base=p.parent)


def json_schema() -> dict:
    """The JSON Schema of a sweep file: :class:`SweepFile`, and for each engine the settings
    ``[fixed]`` may give and ``[axes]`` may list, with their types and ranges."""
    schema = SweepFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    defs, rules = schema.setdefault("$defs", {}), []
    for engine, model in POINTS.items():
        props = dict(model.model_json_schema()["properties"])
        if engine == "des":
            props.update(DesParams.model_json_schema()["properties"])
        props = {n: props[n] for n in settings(engine)}
        props.update({old: props[new] for old, new in ALIASES.items()})
        defs[f"{engine}_fixed"] = {"type": "object", "properties": props,
                                   "additionalProperties": False}
        defs[f"{engine}_axes"] = {
            "type": "object", "additionalProperties": False,
            "properties": {n: {"type": "array", "minItems": 1, "uniqueItems": True,
                               "items": p} for n, p in props.items()}}
        rules.append({"if": {"properties": {"engine": {"const": engine}}},
                      "then": {"properties": {"fixed": {"$ref": f"#/$defs/{engine}_fixed"},
                                              "axes": {"$ref": f"#/$defs/{engine}_axes"}}}})
    schema["allOf"] = rules
    return schema
