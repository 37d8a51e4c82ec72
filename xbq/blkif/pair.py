"""A connected blkfront/blkback pair: the one set-up path of both engines.

:func:`connect_pair` runs the whole XenStore handshake (:func:`xbq.blkif.negotiate.negotiate`)
for ``nr_rings`` rings, builds blkfront's and blkback's records on it
(:func:`~xbq.blkif.blkfront.new_blkfront`, :func:`~xbq.blkif.blkback.new_blkback`) over a
device (:mod:`xbq.blkif.vbd`), and reserves the guest's data buffer. The native engine
connects one pair per measured point; the twin connects one per point too and runs each
placement of the jobs on it, putting it back as it was connected in between
(:meth:`blkif_pair.restore`): the handshake is Python and costs milliseconds, the restore a
copy of the drivers' records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xbq.blkif.blkback import new_blkback, xen_blkif_device
from xbq.blkif.blkfront import blkfront_device, blkfront_pages, new_blkfront
from xbq.blkif.negotiate import Connection, negotiate
from xbq.blkif.vbd import new_vbd
from xbq.errors import XbqError


@dataclass(eq=False)
class blkif_pair:  # noqa: N801 - the drivers' lowercase struct names
    """One connected device: the handshake's outcome, both drivers, the guest's data buffer.

    Attributes
    ----------
    conn : Connection
    front : blkfront_device
    back : xen_blkif_device
    buf_pfn : int
        First guest page of the ``data_pages``-page data buffer.
    """

    conn: Connection
    front: blkfront_device
    back: xen_blkif_device
    buf_pfn: int
    _saved: list = field(default_factory=list, repr=False)

    def _records(self) -> list[np.ndarray]:
        """The drivers' records a run changes and that are copied back whole."""
        f, b = self.front, self.back
        return [f.info, f.rinfo, f.shadow, f.grants, b.blkif, b.rings, b.maptrack, b.evtchn,
                b.vbd.vbd, b.vbd.disk]

    def _grefs(self) -> np.ndarray:
        """Every grant reference a run can touch: blkfront's pool and the rings' pages."""
        refs = [self.front.grants["gref"].ravel()]
        refs += [np.asarray(r.ring_refs, np.int64) for r in self.conn.rings]
        return np.unique(np.concatenate(refs))

    def _pending_fields(self) -> list[str]:
        """blkback's ``pending_req`` fields but the segment lists (each written before it is
        read, by the request that uses the slot)."""
        return [n for n in self.back.pending.dtype.names if n != "segs"]

    def save(self) -> None:
        """Keep the state as connected, for :meth:`restore`."""
        g = self._grefs()
        b = self.back
        self._saved = [
            [a.copy() for a in self._records()],
            [self.front.sring(r).copy() for r in range(self.conn.nr_rings)],
            g, b.gnt[g].copy(), b.active[g].copy(), b.pgnt[:, g].copy(),
            {n: b.pending[n].copy() for n in self._pending_fields()},
        ]

    def restore(self) -> None:
        """Put the pair back as :meth:`save` found it: every record; the grant table's, its
        active entries' and the persistent-grant table's entries of the grant references a
        run can touch (blkfront's pool and the rings: the frontend grants nothing else);
        blkback's ``pending_req`` slots but their segment lists; the shared ring pages. The
        rest of guest memory (the pool's pages: data, indirect descriptors) and the segment
        lists are each written before they are read again, so what a run left in them is
        never seen (``tests/test_golden.py`` checks the twin's frames over several
        placements bit for bit, ``tests/test_engine_pieces.py`` every array but those)."""
        if not self._saved:
            raise XbqError("restore() without save()")
        records, rings, g, gnt, active, pgnt, pending = self._saved
        for dst, src in zip(self._records(), records, strict=True):
            np.copyto(dst, src)
        for r, src in enumerate(rings):
            np.copyto(self.front.sring(r), src)
        b = self.back
        b.gnt[g] = gnt
        b.active[g] = active
        b.pgnt[:, g] = pgnt
        for n, src in pending.items():
            b.pending[n] = src


def connect_pair(nr_rings: int, *, vcpus: int, dom0_vcpus: int, sectors: int,
                 backend_max_queues: int | None = None, ring_page_order: int = 0,
                 persistent: bool = True, max_indirect: int = 32, data_pages: int = 1,
                 min_front_pages: int = 0, device: str = "null", touch_data: bool = True,
                 defer: bool = False) -> blkif_pair:
    """Connect a frontend with ``nr_rings`` rings of ``2**ring_page_order`` pages to blkback.

    Parameters
    ----------
    nr_rings : int
        Rings asked for (``max_queues``); anything else connected is an error.
    vcpus, dom0_vcpus : int
        The guest's vCPUs (blkfront caps its queues at them) and dom0's.
    sectors : int
        The device's size in 512-byte sectors.
    backend_max_queues : int, optional
        blkback's ``max_queues`` (default ``nr_rings``).
    ring_page_order, persistent, max_indirect :
        What both ends offer: ring pages, persistent grants, indirect segments.
    data_pages : int
        Guest pages reserved as the data buffer (after the drivers' pages).
    min_front_pages : int
        The guest's memory, at least (pages); it always holds the rings, the grant pool and
        the buffer.
    device : {"null", "ramdisk"}
        What blkback serves (:func:`xbq.blkif.vbd.new_vbd`).
    touch_data : bool
        blkfront copies data to and from the grant pages (engines that move none: False).
    defer : bool
        blkback queues what it dispatched for the caller to complete (the twin).

    Raises
    ------
    XbqError
        The handshake did not connect ``nr_rings`` rings.
    """
    pages = max(min_front_pages,
                blkfront_pages(nr_rings, ring_page_order, max_indirect) + data_pages + 64)
    conn = negotiate(vcpus=max(vcpus, nr_rings), max_queues=nr_rings,
                     backend_max_queues=backend_max_queues or nr_rings, dom0_vcpus=dom0_vcpus,
                     max_ring_page_order=ring_page_order, backend_max_ring_page_order=4,
                     feature_persistent=persistent, backend_feature_persistent=persistent,
                     max_indirect_segments=max_indirect, sectors=sectors, front_pages=pages)
    if not conn.connected or conn.nr_rings != nr_rings:
        raise XbqError(f"the handshake did not give {nr_rings} ring(s): "
                       f"{conn.error or f'{conn.nr_rings} negotiated'}")
    buf_pfn = conn.front.alloc_pages(data_pages)
    front = new_blkfront(conn, touch_data=touch_data)
    back = new_blkback(conn, new_vbd(device, sectors), defer=defer)
    return blkif_pair(conn, front, back, buf_pfn)
