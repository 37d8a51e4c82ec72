"""The Xen primitives the block protocol stands on (Xen's ``include/public`` and Linux's
``include/xen`` and ``drivers/xen``):

* :mod:`xbq.xen.abi`: the blkif ABI, constants under their kernel names, ring geometry;
* :mod:`xbq.xen.memory`: guest memory and typed byte access to it;
* :mod:`xbq.xen.atomic`: atomics, barriers, the pause hint, a clock (LLVM instructions);
* :mod:`xbq.xen.ring`: ring.h's macros on a real shared page;
* :mod:`xbq.xen.grant`: grant tables, the hypervisor's map checks, maptrack;
* :mod:`xbq.xen.evtchn`: event channels;
* :mod:`xbq.xen.xenstore`: an in-memory XenStore with permissions, transactions, watches;
* :mod:`xbq.xen.xenbus`: the xenbus device model both drivers use.
"""
