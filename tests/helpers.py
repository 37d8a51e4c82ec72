"""Helpers the tests share (the ``cli`` fixture and its one-line-error check are in
``conftest.py``): a connected driver pair, and a request written into a ring slot from the
ABI's own dtype."""

import numpy as np

from xbq.blkif.pair import connect_pair
from xbq.xen.abi import REQUEST_DISCARD_DTYPE, REQUEST_DTYPE, REQUEST_INDIRECT_DTYPE


def connected_pair(nr_rings=1, *, device="ramdisk", sectors=1 << 16, **kw):
    """A blkfront/blkback pair through the real handshake (:func:`xbq.blkif.pair.connect_pair`),
    with ``nr_rings`` rings on as many vCPUs."""
    return connect_pair(nr_rings, vcpus=max(nr_rings, 1), dom0_vcpus=max(nr_rings, 1),
                        sectors=sectors, device=device, **kw)


def pack_request(sring, off, *, op, id, sector=0, nseg=None, segs=(), indirect_op=None,
                 indirect_grefs=(), nr_sectors=None):
    """Write a ``blkif_request`` into the slot at byte ``off`` of ``sring``, field by field
    through :data:`xbq.xen.abi.REQUEST_DTYPE` (or its discard or indirect form): ``segs`` are
    ``(gref, first_sect, last_sect)``; ``indirect_op`` makes it indirect (its segments then
    live in the pages of ``indirect_grefs``); ``nr_sectors`` makes it a discard."""
    slot = sring[off:off + REQUEST_DTYPE.itemsize]
    slot[:] = 0
    if nr_sectors is not None:
        req = slot.view(REQUEST_DISCARD_DTYPE)[0]
        req["nr_sectors"] = nr_sectors
    elif indirect_op is not None:
        req = slot.view(REQUEST_INDIRECT_DTYPE)[0]
        req["indirect_op"] = indirect_op
        req["nr_segments"] = len(segs) if nseg is None else nseg
        req["indirect_grefs"][:len(indirect_grefs)] = indirect_grefs
    else:
        req = slot.view(REQUEST_DTYPE)[0]
        req["nr_segments"] = len(segs) if nseg is None else nseg
        for i, (gref, first, last) in enumerate(segs):
            req["seg"][i] = (gref, first, last)
    req["operation"] = op
    req["id"] = id
    req["sector_number"] = np.uint64(sector)
    return off
