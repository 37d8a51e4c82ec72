"""xbq: why one ring behind one lock stops scaling, and how far per-queue rings take you.

Layers, bottom up (a lower layer never imports an upper one):

1. :mod:`xbq.xen` (the Xen primitives: ABI, guest memory, atomics, ring.h, grant tables,
   event channels, XenStore, xenbus) and :mod:`xbq.workload` (fio-like workloads, random
   streams, histograms);
2. :mod:`xbq.blkif`: the two drivers (blkfront, blkback, each with its xenbus half), their
   devices, the blk-mq glue, the handshake, the one-thread loopback, the fuzzer;
3. :mod:`xbq.engines`: the results schema, real threads (``engines.native``) and the
   discrete-event twin (``engines.des``);
4. :mod:`xbq.models` and :mod:`xbq.fit`: queueing models and fitting;
5. :mod:`xbq.study` (datasets, paths, the results store, plots) and :mod:`xbq.cli`.
"""

from xbq import _jit  # noqa: F401  (must run before any cached kernel is defined)

__version__ = "0.1.0"

__all__ = ["__version__"]
