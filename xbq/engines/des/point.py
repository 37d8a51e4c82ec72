"""One point of the discrete-event twin: every input of a run, typed and checked whole.

A :class:`DesPoint` is what :func:`xbq.engines.des.simulate.simulate_point` runs and what
its row's ``config`` and ``point_key`` describe: the driver mode, fio's jobs and iodepth, the
guest's rings and vCPUs, the measured window and warm-up, the seed and repetition, the
workload, and the costs (:class:`~xbq.engines.des.params.DesParams`). Ranges are the
engine's own (:mod:`xbq.checks`); a bad value is a one-line :class:`~xbq.errors.XbqError`
naming the field, raised before anything is built or compiled.
"""

from typing import Literal

from pydantic import Field, model_validator

from xbq.checks import (
    MAX_DURATION_S,
    MAX_IODEPTH,
    MAX_JOBS,
    MAX_QUEUES,
    MAX_SEED,
    MAX_VCPUS,
    Int,
    Number,
    Seconds,
)
from xbq.engines.des.params import DesParams
from xbq.engines.schema import Bssplit, Point
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD

MODES = ("sq", "mq1", "mq")
#: Least warm-up (virtual s) when none is given: 10 % of the window, at least this.
MIN_WARMUP_S = 0.002


def default_warmup(duration_s: float) -> float:
    """The warm-up when none is given: ``max(0.1 * duration, 2 ms)`` (virtual s)."""
    return max(0.1 * duration_s, MIN_WARMUP_S)


class DesPoint(Point):
    """One run of the twin (see the module docstring); ``DesPoint(jobs=16)`` is mq, 16 rings
    on 16 vCPUs, iodepth 64, 0.2 virtual s after the warm-up, seed 1, default costs."""

    engine: Literal["des"] = "des"
    mode: Literal["sq", "mq1", "mq"] = Field(
        "mq", description="sq: one ring, one io_lock; mq1: blk-mq, one queue; mq: per-ring "
        "locks")
    jobs: Int(1, MAX_JOBS) = Field(1, description="fio jobs, each keeping iodepth I/Os in "
                                   "flight")
    queues: Int(1, MAX_QUEUES) = Field(16, description="rings in mq mode (sq and mq1: one)")
    vcpus: Int(1, MAX_VCPUS) = Field(16, description="guest vCPUs the jobs run on")
    iodepth: Int(1, MAX_IODEPTH) = Field(64, description="I/Os in flight per job")
    duration_s: Seconds(MAX_DURATION_S) = Field(0.2, description="measured window after the "
                                                "warm-up (virtual s)")
    warmup_s: Seconds(MAX_DURATION_S, positive=False) = Field(
        None, description="least virtual seconds discarded first (default: 10 % of the "
        "window, at least 2 ms); the warm-up also lasts until warmup_ios I/Os are done")
    warmup_ios: Int(0, 1 << 62) | None = Field(
        None, description="I/Os the warm-up waits for (default: closed loop 3 x jobs x "
        "iodepth, open loop 0)")
    seed: Int(0, MAX_SEED) = Field(1, description="seed of every random stream")
    rep: Int(0, 1 << 31) = Field(0, description="repetition index")
    bssplit: Bssplit = Field(IOMETER_BSSPLIT, description="fio bssplit of the jobs")
    rwmixread: Number(0.0, 100.0) = Field(float(IOMETER_RWMIXREAD),
                                         description="percentage of reads")
    params: DesParams = Field(default_factory=DesParams, description="the twin's costs")

    @model_validator(mode="before")
    @classmethod
    def _default_warmup(cls, data):
        """Resolve the default warm-up from the window, so the key names the one run."""
        if isinstance(data, dict) and data.get("warmup_s") is None:
            try:
                data = {**data, "warmup_s": default_warmup(float(data.get("duration_s", 0.2)))}
            except (TypeError, ValueError, OverflowError):
                pass  # a bad duration_s is refused by its own field
        return data

    @property
    def rings(self) -> int:
        """Rings the run connects: ``queues`` in mq mode, one otherwise."""
        return self.queues if self.mode == "mq" else 1
