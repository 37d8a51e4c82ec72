"""A connected blkif device for the twin, through the real XenStore handshake.

:func:`connect` runs :func:`xbq.xenbus.negotiate` (``sq``/``mq1``: one ring, ``mq``: Q rings)
and reserves a run of guest pages as the data buffer every request points at (the twin moves
no data: ``touch_data=False``).
"""

from __future__ import annotations

from xbq.abi import ring_size
from xbq.errors import XbqError
from xbq.xenbus import negotiate

#: Guest pages reserved as the (never touched) data buffer of every request.
BUF_PAGES = 64


def _pool_per_ring(order: int, max_indirect: int) -> int:
    data = max_indirect if max_indirect > 11 else 11
    return (data + -(-data // 512)) * ring_size(order)


def connect(nr_rings: int, order: int, persistent: bool, max_indirect: int, sectors: int,
            vcpus: int, dom0_vcpus: int):
    """Return ``(conn, buf_pfn)``: a connected device with ``nr_rings`` rings of ``2**order``
    pages, and the first guest page of a ``BUF_PAGES``-page data buffer."""
    pages = nr_rings * ((1 << order) + _pool_per_ring(order, max_indirect)) + BUF_PAGES + 64
    conn = negotiate(vcpus=max(vcpus, nr_rings), max_queues=nr_rings,
                     backend_max_queues=nr_rings, dom0_vcpus=dom0_vcpus,
                     max_ring_page_order=order, backend_max_ring_page_order=4,
                     feature_persistent=persistent, backend_feature_persistent=persistent,
                     max_indirect_segments=max_indirect, sectors=sectors, front_pages=pages)
    if not conn.connected or conn.nr_rings != nr_rings:
        raise XbqError(f"handshake did not give {nr_rings} ring(s): "
                       f"{conn.error or f'{conn.nr_rings} negotiated'}")
    return conn, conn.front.alloc_pages(BUF_PAGES)
