"""The discrete-event twin: the blkif protocol in virtual time (see ``docs/des.md``).

Public API: :func:`simulate` (a tidy frame in the :mod:`xbq.engines.schema` schema,
``engine="des"``), :class:`DesParams` and :func:`load_params` (the costs), :func:`calibrate`
(fit a few costs to a tidy IOPS table such as the seed). The modules follow SimPy's split:
:mod:`~xbq.engines.des.state` (the records), :mod:`~xbq.engines.des.heap` (the event list),
:mod:`~xbq.engines.des.cpus` and :mod:`~xbq.engines.des.locks` (the resources),
:mod:`~xbq.engines.des.tasks` (the processes), :mod:`~xbq.engines.des.loop` (the loop).
"""

from xbq.engines.des.params import DesParams, load_params

__all__ = ["DesParams", "load_params", "simulate", "calibrate"]


def __getattr__(name):  # heavy modules load on first use
    if name == "simulate":
        from xbq.engines.des.simulate import simulate
        return simulate
    if name == "calibrate":
        from xbq.engines.des.calibrate import calibrate
        return calibrate
    raise AttributeError(name)
