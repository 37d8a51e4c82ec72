"""The discrete-event twin: the blkif protocol in virtual time (see ``docs/des.md``).

Public API: :func:`simulate` (a tidy frame in the :mod:`xbq.engines.schema` schema,
``engine="des"``), :func:`~xbq.engines.des.simulate.simulate_point` (one
:class:`~xbq.engines.des.point.DesPoint`, its row), :class:`DesParams` and
:func:`load_params` (the costs). The calibration lives in :mod:`xbq.study.calibrate`. The
modules follow SimPy's split: :mod:`~xbq.engines.des.state` (the records),
:mod:`~xbq.engines.des.heap` (the event list), :mod:`~xbq.engines.des.cpus` and
:mod:`~xbq.engines.des.locks` (the resources), :mod:`~xbq.engines.des.tasks` with
:mod:`~xbq.engines.des.jobs`, :mod:`~xbq.engines.des.irq` and
:mod:`~xbq.engines.des.backend` (the processes), :mod:`~xbq.engines.des.loop` (the loop).
"""

from xbq.engines.des.params import DesParams, load_params

__all__ = ["DesParams", "load_params", "simulate", "simulate_point"]


def __getattr__(name):  # heavy modules load on first use
    if name in ("simulate", "simulate_point"):
        from xbq.engines.des import simulate as module
        return getattr(module, name)
    raise AttributeError(name)
