"""blkback's xenbus half (Linux ``drivers/block/xen-blkback/xenbus.c``): probe, the
frontend's state changes, ``connect_ring`` / ``read_per_ring_refs`` (the frontend's keys,
checked; the rings mapped and their event channels bound) and ``connect``.

A bad or missing key is :func:`xbq.xen.xenbus.xenbus_dev_fatal` with blkback's messages (an
``error`` node, Closing), after which :func:`xen_blkif_disconnect` leaves nothing mapped or
bound. Numbers are read as C's ``%u`` would, refusing garbage (:func:`xbq.xen.xenbus.scan_u32`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np

from xbq.xen.abi import (
    VDISK_CDROM,
    VDISK_READONLY,
    XEN_IO_PROTO_ABI_NATIVE,
    XEN_IO_PROTO_ABI_X86_32,
    XEN_IO_PROTO_ABI_X86_64,
    XEN_PAGE_SIZE,
    XenbusState,
)
from xbq.xen.evtchn import EvtchnError, evtchn_bind_interdomain, evtchn_close
from xbq.xen.grant import GNTST_NAMES, xen_domain
from xbq.xen.xenbus import (
    scan_int,
    scan_u32,
    xenbus_dev_fatal,
    xenbus_device,
    xenbus_printf,
    xenbus_read,
    xenbus_read_unsigned,
    xenbus_scanf,
    xenbus_switch_state,
)
from xbq.xen.xenstore import XBT_NIL, TransactionConflict, XenStoreError


@dataclass(eq=False)
class xen_blkif_ring:
    """The set-up half of blkback's ``struct xen_blkif_ring``: what ``connect_ring`` mapped."""

    index: int
    ring_refs: list
    evtchn: int  # the frontend's port, as read from the store
    back_handles: list = field(default_factory=list)
    back_port: int = -1  # the bound local port ("irq"), as its slot; -1 until bound


@dataclass(eq=False)
class backend_info:
    """blkback's ``struct backend_info`` plus the set-up fields of ``struct xen_blkif``.

    The module parameters live here too (``xenblk_max_queues``, ``xen_blkif_max_ring_order``,
    ``feature_persistent``), as do the device properties the toolstack would give it.
    """

    dev: xenbus_device
    front: xen_domain
    back: xen_domain
    evtchn: np.ndarray  # EVTCHN_DTYPE records
    maptrack: np.ndarray  # MAPTRACK_DTYPE: the handles of the mapped ring pages
    mt_head: np.ndarray  # MAPTRACK_HEAD_DTYPE[1]: its free list
    xenblk_max_queues: int
    xen_blkif_max_ring_order: int
    feature_persistent: bool
    max_indirect_segments: int | None
    old_backend: bool
    sectors: int
    sector_size: int
    flush_support: bool
    discard_support: bool
    major: int = 0
    minor: int = 0
    mode: str | None = None
    vbd_type: int = 0
    vbd_open: bool = False
    readonly: bool = False
    blk_protocol: str | None = None
    feature_gnt_persistent: bool = False
    nr_rings: int = 0
    nr_ring_pages: int = 0
    rings: list = field(default_factory=list)


def xen_blkbk_probe(be: backend_info) -> None:
    """blkback ``xen_blkbk_probe``: advertise the maxima, watch the device, go InitWait."""
    dev = be.dev
    if be.max_indirect_segments is not None:
        xenbus_printf(dev, XBT_NIL, dev.nodename, "feature-max-indirect-segments", "%u",
                      be.max_indirect_segments)
    if not be.old_backend:
        xenbus_printf(dev, XBT_NIL, dev.nodename, "multi-queue-max-queues", "%u",
                      be.xenblk_max_queues)
    dev.store.watch(f"{dev.nodename}/physical-device", f"backend:{dev.nodename}",
                    lambda path, token: backend_changed(be), domid=dev.domid)
    xenbus_printf(dev, XBT_NIL, dev.nodename, "max-ring-page-order", "%u",
                  be.xen_blkif_max_ring_order)
    xenbus_switch_state(dev, XenbusState.InitWait)


def backend_changed(be: backend_info) -> None:
    """blkback ``backend_changed``: the hotplug script wrote ``physical-device``; open it."""
    dev = be.dev
    try:
        text = xenbus_read(dev, XBT_NIL, dev.nodename, "physical-device")
    except XenStoreError:
        return  # not written yet: wait for the next event
    try:
        major, minor = (int(x, 16) for x in text.split(":"))
    except ValueError:
        xenbus_dev_fatal(dev, -errno.EINVAL, "reading physical-device")
        return
    if be.vbd_open and (be.major, be.minor) != (major, minor):
        print(f"blkback: changing physical device (from {be.major:x}:{be.minor:x} to "
              f"{major:x}:{minor:x}) not supported.")
        return
    if be.vbd_open:
        return
    be.mode = dev.store.read(f"{dev.nodename}/mode", None, domid=dev.domid)
    try:
        device_type = xenbus_read(dev, XBT_NIL, dev.otherend, "device-type")
    except XenStoreError:
        device_type = ""
    be.major, be.minor = major, minor
    be.readonly = be.mode is None or "w" not in be.mode
    be.vbd_type = VDISK_CDROM if device_type == "cdrom" else 0
    be.vbd_open = True  # xen_vbd_create
    xen_update_blkif_status(be)


def frontend_changed(dev: xenbus_device, frontend_state: XenbusState) -> None:
    """blkback ``frontend_changed``: react to the frontend's state."""
    be: backend_info = dev.driver_data
    if frontend_state == XenbusState.Initialising:
        if dev.state == XenbusState.Closed:  # "prepare for reconnect"
            xenbus_switch_state(dev, XenbusState.InitWait)
    elif frontend_state in (XenbusState.Initialised, XenbusState.Connected):
        # Connect even if two watches fired in close succession and we missed Initialised.
        if dev.state == XenbusState.Connected:
            return
        xen_blkif_disconnect(be)  # idempotent; enforce the precondition
        if connect_ring(be) != 0:
            xen_blkif_disconnect(be)  # connect_ring already reported the error
            return
        xen_update_blkif_status(be)
    elif frontend_state == XenbusState.Closing:
        xenbus_switch_state(dev, XenbusState.Closing)
    elif frontend_state == XenbusState.Closed:
        xen_blkif_disconnect(be)
        xenbus_switch_state(dev, XenbusState.Closed)
        # online: the device stays (Linux unregisters it otherwise)
    elif frontend_state == XenbusState.Unknown:
        xen_blkif_disconnect(be)  # device_unregister -> xen_blkbk_remove
    else:
        xenbus_dev_fatal(dev, -errno.EINVAL, f"saw state {int(frontend_state)} at frontend")


def connect_ring(be: backend_info) -> int:
    """blkback ``connect_ring``: read the frontend's keys, map every ring; 0 or -errno.

    Refusals are :func:`xenbus_dev_fatal` with blkback's messages; the caller then
    disconnects, so a refused handshake leaves nothing mapped or bound.
    """
    dev = be.dev
    try:
        protocol = xenbus_read(dev, XBT_NIL, dev.otherend, "protocol")
    except XenStoreError:
        protocol = None
    if protocol is None:
        # blkback assumes BLKIF_PROTOCOL_DEFAULT, the x86_32 layout on x86 builds; xbq's
        # blkback speaks only the native x86_64 layout, so it cannot serve this frontend.
        xenbus_dev_fatal(dev, -errno.ENOSYS,
                         f"reading {dev.otherend}/protocol: missing; blkback would assume "
                         f"{XEN_IO_PROTO_ABI_X86_32}, which xbq does not serve")
        return -errno.ENOSYS
    if protocol not in (XEN_IO_PROTO_ABI_NATIVE, XEN_IO_PROTO_ABI_X86_64):
        known = protocol == XEN_IO_PROTO_ABI_X86_32
        xenbus_dev_fatal(dev, 0 if not known else -errno.ENOSYS,
                         f"unknown fe protocol {protocol}" if not known
                         else f"fe protocol {protocol} is not served by xbq")
        return -errno.ENOSYS
    be.blk_protocol = protocol
    pers_grants = xenbus_read_unsigned(dev, dev.otherend, "feature-persistent", 0)
    be.feature_gnt_persistent = bool(be.feature_persistent and pers_grants)

    requested = 1
    if not be.old_backend:
        try:
            requested = xenbus_scanf(dev, XBT_NIL, dev.otherend, "multi-queue-num-queues",
                                     scan_u32)
        except XenStoreError:
            requested = 1
        else:
            if requested > be.xenblk_max_queues or requested <= 0:
                # Buggy or malicious guest. Linux passes scanf's return (1) as the error.
                xenbus_dev_fatal(dev, 1, f"guest requested {requested} queues, exceeding the "
                                         f"maximum of {be.xenblk_max_queues}.")
                return -errno.ENOSYS
    be.nr_rings = requested
    be.rings = [xen_blkif_ring(i, [], -1) for i in range(requested)]
    if requested == 1:
        return read_per_ring_refs(be, be.rings[0], dev.otherend)
    for ring in be.rings:
        err = read_per_ring_refs(be, ring, f"{dev.otherend}/queue-{ring.index}")
        if err:
            return err
    return 0


def read_per_ring_refs(be: backend_info, ring: xen_blkif_ring, dir: str) -> int:
    """blkback ``read_per_ring_refs``: event channel, ring references, map; 0 or -errno."""
    dev = be.dev
    try:
        evtchn = xenbus_scanf(dev, XBT_NIL, dir, "event-channel", scan_u32)
    except XenStoreError:
        xenbus_dev_fatal(dev, -errno.EINVAL, f"reading {dir}/event-channel")
        return -errno.EINVAL
    try:
        order = xenbus_scanf(dev, XBT_NIL, dev.otherend, "ring-page-order", scan_int)
    except XenStoreError as exc:
        if exc.errno != errno.ENOENT:  # present but not a number: refused, not "absent"
            xenbus_dev_fatal(dev, -errno.EINVAL, f"reading {dev.otherend}/ring-page-order")
            return -errno.EINVAL
        order = None
    if order is None:
        try:
            refs = [xenbus_scanf(dev, XBT_NIL, dir, "ring-ref", scan_u32)]
        except XenStoreError:
            xenbus_dev_fatal(dev, -errno.EINVAL, f"reading {dir}/ring-ref")
            return -errno.EINVAL
    else:
        if order > be.xen_blkif_max_ring_order or order < 0:
            xenbus_dev_fatal(dev, -errno.EINVAL, f"{dir}/request {order} ring page order "
                                                 f"exceed max:{be.xen_blkif_max_ring_order}")
            return -errno.EINVAL
        refs = []
        for i in range(1 << order):
            try:
                refs.append(xenbus_scanf(dev, XBT_NIL, dir, f"ring-ref{i}", scan_u32))
            except XenStoreError:
                xenbus_dev_fatal(dev, -errno.EINVAL, f"reading {dir}/ring-ref{i}")
                return -errno.EINVAL
    be.nr_ring_pages = len(refs)
    ring.ring_refs = refs
    ring.evtchn = evtchn
    err = xen_blkif_map(be, ring)
    if err:
        xenbus_dev_fatal(dev, err, f"mapping ring-ref port {evtchn}")
        return err
    return 0


def xen_blkif_map(be: backend_info, ring: xen_blkif_ring) -> int:
    """blkback ``xen_blkif_map``: map the ring pages, bind the event channel; 0 or -errno.

    A failed map (``xenbus_map_ring_valloc``) unmaps what it mapped and reports which page;
    a failed bind unmaps the ring.
    """
    dev = be.dev
    if ring.back_port >= 0:  # already connected
        return 0
    handles = []
    for ref in ring.ring_refs:
        h = be.front.map_grant_ref(ref, be.back.domid, False, be.maptrack, be.mt_head[0])
        if h < 0:
            for done in handles:
                be.front.unmap_grant_ref(be.maptrack, be.mt_head[0], done)
            xenbus_dev_fatal(dev, h, f"mapping in shared page {ref} from domain "
                                     f"{dev.otherend_id} ({GNTST_NAMES.get(h, h)})")
            return -errno.ENOENT
        handles.append(h)
    ring.back_handles = handles
    try:
        ring.back_port = evtchn_bind_interdomain(be.evtchn, be.back.domid, dev.otherend_id,
                                                 ring.evtchn)
    except EvtchnError as exc:  # not offered to us (EINVAL), or dom0 has no free port (ENOSPC)
        for h in handles:
            be.front.unmap_grant_ref(be.maptrack, be.mt_head[0], h)
        ring.back_handles = []
        return -exc.errno
    return 0


def xen_blkif_disconnect(be: backend_info) -> None:
    """blkback ``xen_blkif_disconnect``: unbind and unmap every ring (idempotent)."""
    for ring in be.rings:
        if ring.back_port >= 0:
            evtchn_close(be.evtchn, ring.back_port)
            ring.back_port = -1
        for h in ring.back_handles:
            be.front.unmap_grant_ref(be.maptrack, be.mt_head[0], h)
        ring.back_handles = []
    be.rings = []
    be.nr_rings = 0
    be.nr_ring_pages = 0


def xen_update_blkif_status(be: backend_info) -> None:
    """blkback ``xen_update_blkif_status``: connect once the rings and the device are ready."""
    if not be.rings or be.rings[0].back_port < 0 or not be.vbd_open:
        return
    if be.dev.state == XenbusState.Connected:
        return
    connect(be)


def connect(be: backend_info) -> None:
    """blkback ``connect``: write the device's keys in one transaction, switch Connected."""
    dev = be.dev
    while True:
        xbt = dev.store.transaction_start()
        d = dev.nodename
        xenbus_printf(dev, xbt, d, "feature-flush-cache", "%d", int(be.flush_support))
        if be.discard_support and xenbus_read_unsigned(dev, d, "discard-enable", 1):
            xenbus_printf(dev, xbt, d, "discard-granularity", "%u", XEN_PAGE_SIZE)
            xenbus_printf(dev, xbt, d, "discard-alignment", "%u", 0)
            xenbus_printf(dev, xbt, d, "discard-secure", "%d", 0)
            xenbus_printf(dev, xbt, d, "feature-discard", "%d", 1)
        else:
            xenbus_printf(dev, xbt, d, "feature-discard", "%d", 0)
        xenbus_printf(dev, xbt, d, "feature-barrier", "%d", int(be.flush_support))
        xenbus_printf(dev, xbt, d, "feature-persistent", "%u", int(be.feature_persistent))
        xenbus_printf(dev, xbt, d, "sectors", "%u", be.sectors)
        xenbus_printf(dev, xbt, d, "info", "%u",
                      be.vbd_type | (VDISK_READONLY if be.readonly else 0))
        xenbus_printf(dev, xbt, d, "sector-size", "%u", be.sector_size)
        xenbus_printf(dev, xbt, d, "physical-sector-size", "%u", be.sector_size)
        try:
            dev.store.transaction_end(xbt)
        except TransactionConflict:
            continue
        break
    xenbus_switch_state(dev, XenbusState.Connected)
