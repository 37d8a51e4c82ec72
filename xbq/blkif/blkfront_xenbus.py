"""blkfront's xenbus half (Linux ``drivers/block/xen-blkfront.c``): probe, the backend's
state changes, ``negotiate_mq``, ``talk_to_blkback`` (rings set up and granted, event
channels allocated, the keys of reference §4.3 written in one transaction) and
``blkfront_connect`` (the device's size and features read).

The data path of the same driver is :mod:`xbq.blkif.blkfront`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np

from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKFRONT_MAX_INDIRECT_SEGMENTS,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    MAX_INDIRECT_SEGMENTS,
    XEN_IO_PROTO_ABI_NATIVE,
    XEN_PAGE_SIZE,
    XenbusState,
)
from xbq.xen.evtchn import EvtchnError, evtchn_alloc_unbound, evtchn_port
from xbq.xen.grant import xen_domain
from xbq.xen.ring import FRONT_RING_DTYPE, XEN_FRONT_RING_INIT
from xbq.xen.xenbus import (
    _path,
    scan_u32,
    scan_uint,
    xenbus_dev_fatal,
    xenbus_device,
    xenbus_frontend_closed,
    xenbus_gather,
    xenbus_printf,
    xenbus_read_unsigned,
    xenbus_scanf,
    xenbus_switch_state,
)
from xbq.xen.xenstore import XBT_NIL, TransactionConflict, XenStoreError


@dataclass(eq=False)
class blkfront_ring_info:
    """The set-up half of blkfront's ``struct blkfront_ring_info``: pages, grants, port."""

    index: int
    first_frame: int
    sring: np.ndarray
    ring_refs: list
    evtchn: int


@dataclass(eq=False)
class blkfront_dev_info:
    """The xenbus half of blkfront's ``struct blkfront_info`` (the data-path half is a
    :data:`xbq.blkif.blkfront.BLKFRONT_INFO_DTYPE` record), with the module parameters it
    was loaded with."""

    dev: xenbus_device
    front: xen_domain
    evtchn: np.ndarray  # EVTCHN_DTYPE records
    xen_blkif_max_queues: int
    xen_blkif_max_ring_order: int
    feature_persistent_parm: bool
    xen_blkif_max_segments: int = BLKFRONT_MAX_INDIRECT_SEGMENTS
    force_num_queues: int | None = None
    force_ring_page_order: int | None = None
    omit_keys: tuple = ()
    vdevice: int = 0
    nr_rings: int = 0
    nr_ring_pages: int = 0
    ring_page_order: int = 0
    rinfo: list = field(default_factory=list)
    connected: bool = False
    sectors: int = 0
    sector_size: int = 0
    physical_sector_size: int = 0
    binfo: int = 0
    features: dict = field(default_factory=dict)


def blkfront_probe(info: blkfront_dev_info) -> int:
    """blkfront ``blkfront_probe`` (4.6): read ``virtual-device``, pick the ring count."""
    dev = info.dev
    try:
        info.vdevice = xenbus_scanf(dev, XBT_NIL, dev.nodename, "virtual-device", scan_u32)
    except XenStoreError:
        try:
            info.vdevice = xenbus_scanf(dev, XBT_NIL, dev.nodename, "virtual-device-ext",
                                        scan_u32)
        except XenStoreError:
            xenbus_dev_fatal(dev, -errno.ENOENT, "reading virtual-device")
            return -errno.ENOENT
    negotiate_mq(info)
    return 0


def negotiate_mq(info: blkfront_dev_info) -> None:
    """blkfront ``negotiate_mq``: ``min(multi-queue-max-queues, max_queues)``, at least 1.

    An old backend that does not advertise ``multi-queue-max-queues`` counts as 1.
    """
    if info.force_num_queues is not None:
        info.nr_rings = info.force_num_queues
        return
    backend_max = xenbus_read_unsigned(info.dev, info.dev.otherend, "multi-queue-max-queues", 1)
    info.nr_rings = min(backend_max, info.xen_blkif_max_queues) or 1


def blkback_changed(dev: xenbus_device, backend_state: XenbusState) -> None:
    """blkfront ``blkback_changed``: react to the backend's state."""
    info: blkfront_dev_info = dev.driver_data
    if backend_state == XenbusState.InitWait:
        # Only from Initialising: a double InitWait event must not set the rings up twice.
        if dev.state != XenbusState.Initialising:
            return
        talk_to_blkback(dev, info)
    elif backend_state == XenbusState.Connected:
        if dev.state not in (XenbusState.Initialised, XenbusState.Connected):
            # The backend skipped InitWait (current code): set the rings up first.
            if talk_to_blkback(dev, info):
                return
        blkfront_connect(info)
    elif backend_state == XenbusState.Closed:
        if dev.state == XenbusState.Closed:
            return
        blkfront_closing(info)  # missed the backend's Closing
    elif backend_state == XenbusState.Closing:
        blkfront_closing(info)


def setup_blkrings(dev: xenbus_device, info: blkfront_dev_info, back_domid: int) -> None:
    """``setup_blkring`` for every ring: pages, ``XEN_FRONT_RING_INIT``, grants, event channel.

    Every ring's ``2**order`` pages come from one contiguous allocation, ring after ring
    (ring ``k`` starts at ``first + k * 2**order``).
    """
    npages = info.nr_ring_pages
    info.rinfo = []
    if info.nr_rings == 0:
        return
    first = info.front.alloc_pages(info.nr_rings * npages)
    for k in range(info.nr_rings):
        f = first + k * npages
        sring = info.front.mem[f * XEN_PAGE_SIZE:(f + npages) * XEN_PAGE_SIZE]
        XEN_FRONT_RING_INIT(sring, np.zeros(1, FRONT_RING_DTYPE)[0])
        refs = [info.front.grant(back_domid, f + j) for j in range(npages)]  # xenbus_grant_ring
        port = evtchn_alloc_unbound(info.evtchn, info.front.domid, back_domid)
        info.rinfo.append(blkfront_ring_info(k, f, sring, refs, port))


def _printf_unless_omitted(info, xbt, dir: str, node: str, fmt: str, *args) -> None:
    rel = _path(dir, node)[len(info.dev.nodename) + 1:]
    if rel in info.omit_keys or node in info.omit_keys:
        return
    xenbus_printf(info.dev, xbt, dir, node, fmt, *args)


def write_per_ring_nodes(xbt, info: blkfront_dev_info, rinfo: blkfront_ring_info,
                         dir: str) -> None:
    """blkfront ``write_per_ring_nodes``: ``ring-ref`` (one page) or ``ring-ref<j>``, and
    ``event-channel``, under ``dir``."""
    if info.nr_ring_pages == 1:
        _printf_unless_omitted(info, xbt, dir, "ring-ref", "%u", rinfo.ring_refs[0])
    else:
        for j, ref in enumerate(rinfo.ring_refs):
            _printf_unless_omitted(info, xbt, dir, f"ring-ref{j}", "%u", ref)
    _printf_unless_omitted(info, xbt, dir, "event-channel", "%u",
                           evtchn_port(info.evtchn, rinfo.evtchn))


def talk_to_blkback(dev: xenbus_device, info: blkfront_dev_info) -> int:
    """blkfront ``talk_to_blkback``: set the rings up, write §4.3's keys, go Initialised.

    ``ring-page-order`` is written only for multi-page rings; one ring uses the top-level
    ``ring-ref*``/``event-channel`` (like a frontend that knows nothing of multi-queue), two or
    more write ``multi-queue-num-queues`` and ``queue-<i>/...`` and no top-level ring keys.
    """
    if info.force_ring_page_order is not None:
        order = info.force_ring_page_order
    else:
        backend_max = xenbus_read_unsigned(dev, dev.otherend, "max-ring-page-order", -1)
        order = 0 if backend_max < 0 else min(info.xen_blkif_max_ring_order, backend_max)
    info.ring_page_order = order
    info.nr_ring_pages = 1 << order
    try:
        setup_blkrings(dev, info, dev.otherend_id)
    except EvtchnError as exc:  # xenbus_alloc_evtchn: the guest has no free port
        xenbus_dev_fatal(dev, -exc.errno, f"allocating an event channel: {exc}")
        return -exc.errno
    except XbqError as exc:
        xenbus_dev_fatal(dev, -errno.ENOMEM, f"setting up the rings: {exc}")
        return -errno.ENOMEM
    d = dev.nodename
    while True:
        xbt = dev.store.transaction_start()
        if info.nr_ring_pages > 1:
            _printf_unless_omitted(info, xbt, d, "ring-page-order", "%u", order)
        if info.nr_rings == 1:
            write_per_ring_nodes(xbt, info, info.rinfo[0], d)
        else:
            _printf_unless_omitted(info, xbt, d, "multi-queue-num-queues", "%u", info.nr_rings)
            for rinfo in info.rinfo:
                write_per_ring_nodes(xbt, info, rinfo, f"{d}/queue-{rinfo.index}")
        _printf_unless_omitted(info, xbt, d, "protocol", "%s", XEN_IO_PROTO_ABI_NATIVE)
        _printf_unless_omitted(info, xbt, d, "feature-persistent", "%u",
                               int(info.feature_persistent_parm))
        try:
            dev.store.transaction_end(xbt)
        except TransactionConflict:
            continue
        break
    xenbus_switch_state(dev, XenbusState.Initialised)
    return 0


def blkfront_gather_backend_features(info: blkfront_dev_info) -> None:
    """blkfront ``blkfront_gather_backend_features``: what the backend offers and we use."""
    dev = info.dev
    be = dev.otherend
    indirect = xenbus_read_unsigned(dev, be, "feature-max-indirect-segments", 0)
    # xbq sizes each request's grant list for what Linux blkback serves (256 segments)
    indirect = min(indirect, info.xen_blkif_max_segments, MAX_INDIRECT_SEGMENTS)
    if indirect <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
        indirect = 0
    info.features = {
        "feature_persistent": bool(info.feature_persistent_parm
                                   and xenbus_read_unsigned(dev, be, "feature-persistent", 0)),
        "max_indirect_segments": indirect,
        "feature_flush_cache": bool(xenbus_read_unsigned(dev, be, "feature-flush-cache", 0)),
        "feature_barrier": bool(xenbus_read_unsigned(dev, be, "feature-barrier", 0)),
        "feature_discard": bool(xenbus_read_unsigned(dev, be, "feature-discard", 0)),
    }


def blkfront_connect(info: blkfront_dev_info) -> None:
    """blkfront ``blkfront_connect``: read the device's size and features, go Connected."""
    dev = info.dev
    if info.connected:  # the backend signals a capacity change
        info.sectors = xenbus_read_unsigned(dev, dev.otherend, "sectors", info.sectors)
        return
    try:
        info.sectors, info.binfo, info.sector_size = xenbus_gather(
            dev, XBT_NIL, dev.otherend, ("sectors", scan_uint(63)), ("info", scan_u32),
            ("sector-size", scan_u32))  # a size beyond 2**63 sectors is a malformed key
    except XenStoreError:
        xenbus_dev_fatal(dev, -errno.ENOENT, f"reading backend fields at {dev.otherend}")
        return
    info.physical_sector_size = xenbus_read_unsigned(dev, dev.otherend, "physical-sector-size",
                                                     info.sector_size)
    blkfront_gather_backend_features(info)
    xenbus_switch_state(dev, XenbusState.Connected)
    info.connected = True


def blkfront_closing(info: blkfront_dev_info) -> None:
    """blkfront ``blkfront_closing``: no disk was added or it is unused, so close."""
    if info.dev.state == XenbusState.Closing:
        return
    info.connected = False
    xenbus_frontend_closed(info.dev)
