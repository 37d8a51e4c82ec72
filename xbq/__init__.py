"""xbq: why one ring behind one lock stops scaling, and how far per-queue rings take you.

Layers, bottom up (a lower layer never imports an upper one):

1. ``xbq.abi``, ``xbq.atomic``, ``xbq.ring``: the blkif ABI and the shared ring on real bytes.
2. ``xbq.grant``, ``xbq.evtchn``, ``xbq.xenstore``, ``xbq.xenbus``: grants, event channels and
   the XenStore multi-queue handshake.
3. ``xbq.blkfront``, ``xbq.blkback``, ``xbq.vbd``: the two drivers and their devices.
4. Engines (native threads, discrete-event twin).
5. Models and fitting.
6. Experiments, results store and the ``xbq`` command line.
"""

from xbq import _jit  # noqa: F401  (must run before any cached kernel is defined)

__version__ = "0.1.0"

__all__ = ["__version__"]
