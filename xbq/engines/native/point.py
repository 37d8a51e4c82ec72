"""One measured point of the native engine: every setting that determines it, typed.

:class:`NativePoint` is what a row's ``config`` and ``point_key`` describe (the test hooks
and watchdog limits of :class:`~xbq.engines.native.runner.NativeConfig` are not part of it:
they change whether a run finishes, not what it measures). Ranges are the engine's own
(:mod:`xbq.checks`); a bad value is a one-line :class:`~xbq.errors.XbqError` naming the
field, raised before anything is built.
"""

from typing import Literal

from pydantic import Field, model_validator

from xbq.checks import (
    MAX_IODEPTH,
    MAX_NATIVE_JOBS,
    MAX_QUEUES,
    MAX_SEED,
    MAX_VCPUS,
    Int,
    Number,
    Seconds,
)
from xbq.engines.schema import Bssplit, Point
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD

MODES = ("sq", "mq")
#: Longest measured window or warm-up accepted (s): a day.
MAX_DURATION_S = 86400.0
#: blkback's ``max_queues`` default is the backend domain's online CPUs; negotiate's dom0 has 16.
DEFAULT_BACKEND_MAX_QUEUES = 16
#: dom0's vCPUs, as the twin's default (:class:`xbq.engines.des.params.Machine`).
DEFAULT_DOM0_VCPUS = 16


class NativePoint(Point):
    """One measured point (see the module docstring)."""

    engine: Literal["native"] = "native"
    mode: Literal["sq", "mq"] = Field("mq", description="sq: one ring behind one io_lock; "
                                      "mq: queues rings, a ring_lock each")
    jobs: Int(1, MAX_NATIVE_JOBS) = Field(1, description="fio jobs (tasks on the vCPUs)")
    queues: Int(1, MAX_QUEUES) = Field(4, description="rings asked for in mq mode")
    vcpus: Int(1, MAX_VCPUS) = Field(16, description="guest vCPUs: one thread each, running "
                                     "the jobs placed on it and the interrupts bound to it")
    dom0_vcpus: Int(1, 64) = Field(DEFAULT_DOM0_VCPUS, description="dom0 vCPUs running the "
                                   "rings' xen_blkif_schedule loops (ring r on r % dom0_vcpus)")
    job_placement: bool = Field(False, description="False: job j pinned to vCPU j % vcpus "
                                "(fio's cpus_allowed); True: unpinned, each job on a random "
                                "vCPU (the twin's job_placement plan)")
    iodepth: Int(1, MAX_IODEPTH) = Field(32, description="I/Os in flight per job")
    bssplit: Bssplit = Field(IOMETER_BSSPLIT, description="fio bssplit of the jobs")
    rwmixread: Number(0.0, 100.0) = Field(float(IOMETER_RWMIXREAD),
                                         description="percentage of reads")
    device: Literal["null", "ramdisk"] = Field("null", description="null (no data) or "
                                               "ramdisk (data moved and verified)")
    ring_page_order: Int(0, 4) = Field(0, description="blkfront's max_ring_page_order")
    lock: Literal["ticket", "ttas", "mcs", "pv"] = Field(
        "ticket", description="the spinlock behind io_lock / ring_lock (pv: Xen's "
        "paravirtual ticket lock, which blocks a waiter until the release kicks it)")
    duration_s: Seconds(MAX_DURATION_S) = Field(2.0, description="measured window (s)")
    warmup_s: Seconds(MAX_DURATION_S, positive=False) = Field(0.5, description="warm-up "
                                                              "before the window (s)")
    seed: Int(0, MAX_SEED) = Field(0, description="seed of the jobs' random streams")
    rep: Int(0, 1 << 31) = Field(0, description="repetition index")
    dev_sectors: Int(1, 1 << 40) | None = Field(None, description="device size in 512-byte "
                                                "sectors (default 2**21 null, 2**18 ramdisk)")
    backend_max_queues: Int(1, MAX_QUEUES) = Field(DEFAULT_BACKEND_MAX_QUEUES,
                                                   description="blkback's max_queues")
    spin: Int(0, 1 << 30) = Field(200, description="pause-spins of an idle vCPU before it "
                                  "halts")

    @model_validator(mode="after")
    def _queues_fit(self):
        if self.mode == "mq":
            if self.queues > self.backend_max_queues:
                raise ValueError(f"{self.queues} queues exceed the backend's maximum of "
                                 f"{self.backend_max_queues} (multi-queue-max-queues)")
            if self.queues > self.vcpus:
                raise ValueError(f"{self.queues} queues exceed the {self.vcpus} vCPUs "
                                 "(blkfront caps max_queues at the online vCPUs)")
        return self
