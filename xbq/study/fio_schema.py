"""fio's JSON result as typed models: what ``xbq fio import`` reads, checked whole first.

fio 3.x ``--output-format=json`` (and ``json+``, which adds ``clat_ns.bins``) writes one
object: ``fio version``, ``timestamp``, ``global options`` (strings), and ``jobs``, one entry
per job section (``group_reporting``) or per cloned job, each with its ``jobname``,
``groupid``, ``error``, ``job options`` (strings) and a ``read`` and a ``write`` section. The
models below describe the fields xbq reads with their types and ranges; fio's many other
fields are let through unread, so newer fio versions still import. A wrong type (a number
where fio writes a string, ``true`` for IOPS), a number out of range (IOPS of ``1e308``, a
400-digit count) or a missing section is one line naming the field (:func:`parse_fio`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xbq.checks import Int, Number, Text, refusal
from xbq.errors import XbqError

#: Largest IOPS, bandwidth and latency figures accepted (a trillion a second, 1e15 ns):
#: beyond any device, far below where sums overflow.
MAX_RATE = 1e12
MAX_COUNT = 10 ** 15
#: Most job entries one result may hold.
MAX_ENTRIES = 100_000

Count = Int(0, MAX_COUNT)
PercentKey = Annotated[str, Field(pattern=r"^\d{1,3}(\.\d{1,9})?$", max_length=16)]
BinKey = Annotated[str, Field(pattern=r"^\d{1,16}$")]
OptionValue = Text


class _Fio(BaseModel):
    """fio's objects: extra fields let through unread, never mistyped ones we read."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Latency(_Fio):
    """``clat_ns``: completion latency in ns."""

    N: Count = 0
    mean: Number(0.0, 1e15) = 0.0
    percentile: dict[PercentKey, Number(0.0, 1e15)] | None = None
    bins: dict[BinKey, Count] | None = Field(None, description="json+ only: latency (ns) -> "
                                             "count")


class Direction(_Fio):
    """A job's ``read`` or ``write`` section."""

    iops: Number(0.0, MAX_RATE)
    bw_bytes: Count | None = None
    bw: Count | None = Field(None, description="KiB/s (older fio)")
    total_ios: Count = 0
    runtime: Count = Field(0, description="ms")
    clat_ns: Latency | None = None


class FioJob(_Fio):
    """One entry of ``jobs``."""

    jobname: Text
    groupid: Int(0, MAX_ENTRIES) = 0
    error: Int(-(1 << 31), 1 << 31) = 0
    job_options: dict[Text, OptionValue] = Field(default_factory=dict, alias="job options")
    read: Direction
    write: Direction
    job_runtime: Count | None = Field(None, description="ms")


class FioResult(_Fio):
    """A whole fio JSON result."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True,
                              title="fio JSON result (the fields xbq reads)")

    fio_version: Text = Field("", alias="fio version")
    timestamp: Count = 0
    global_options: dict[Text, OptionValue] = Field(default_factory=dict,
                                                   alias="global options")
    jobs: list[FioJob] = Field(min_length=1, max_length=MAX_ENTRIES)

    @model_validator(mode="before")
    @classmethod
    def _client_stats(cls, data: Any):
        """fio's client/server mode names the list ``client_stats`` and adds a summary
        entry ``All clients``."""
        if isinstance(data, dict) and "jobs" not in data and "client_stats" in data:
            stats = data["client_stats"]
            if isinstance(stats, list):
                stats = [j for j in stats
                         if not (isinstance(j, dict) and j.get("jobname") == "All clients")]
            data = {**data, "jobs": stats}
        return data


def parse_fio(data: Any, where: str) -> FioResult:
    """A parsed fio JSON document as a :class:`FioResult`; one line naming the first bad
    field otherwise."""
    if not isinstance(data, dict):
        raise XbqError(f"{where}: a fio JSON result is an object, not {type(data).__name__} "
                       "(one result per file)")
    if "jobs" not in data and "client_stats" not in data:
        raise XbqError(f"{where}: no jobs in this fio result")
    try:
        return FioResult.model_validate(data)
    except ValidationError as exc:
        raise refusal(exc, where) from None


def json_schema() -> dict:
    """The JSON Schema of the fio results ``xbq fio import`` reads."""
    schema = FioResult.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
