"""The discrete-event twin: the blkif protocol in virtual time (see ``docs/des.md``).

Public API: :func:`simulate` (a tidy frame in the :mod:`xbq.results` schema, ``engine="des"``),
:class:`DesParams` and :func:`load_params` (the costs), :func:`calibrate` (fit a few costs
to a tidy IOPS table such as the seed).
"""

from xbq.des.params import DesParams, load_params

__all__ = ["DesParams", "load_params", "simulate", "calibrate"]


def __getattr__(name):  # heavy modules load on first use
    if name == "simulate":
        from xbq.des.simulate import simulate
        return simulate
    if name == "calibrate":
        from xbq.des.calibrate import calibrate
        return calibrate
    raise AttributeError(name)
