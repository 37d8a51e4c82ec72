"""xenbus and the blkif handshake: both drivers' state machines over the in-memory XenStore.

This module is the set-up half of the protocol (reference §4). It models what Linux's xenbus
core, ``drivers/block/xen-blkfront.c`` and ``drivers/block/xen-blkback/xenbus.c`` do between
the toolstack creating a disk and both ends reaching ``XenbusStateConnected``, with the
multi-queue and multi-page-ring rules of the 2015–2016 series:

1. The toolstack (libxl) writes the frontend and backend directories in one transaction, both
   ``state`` = Initialising, with xenstored permissions (each end owns its directory, the
   other end may read it).
2. blkback's probe (:func:`xen_blkbk_probe`) writes ``feature-max-indirect-segments``,
   ``multi-queue-max-queues`` (not an old backend), watches ``physical-device``, writes
   ``max-ring-page-order`` and switches to InitWait. The hotplug script then writes
   ``physical-device`` and :func:`backend_changed` opens the vbd.
3. blkfront's probe (:func:`blkfront_probe`) reads ``virtual-device`` and picks the number of
   rings (:func:`negotiate_mq`: ``min(multi-queue-max-queues or 1, max_queues)``, at least 1;
   ``max_queues`` is capped by the vCPUs at module init). When the backend's ``state`` watch
   shows InitWait, :func:`talk_to_blkback` picks the ring order
   (``min(max_ring_page_order, max-ring-page-order)``), allocates every ring's pages in one
   contiguous run, initialises and grants them, allocates the event channels, writes the keys
   of §4.3 in one transaction (retried on ``EAGAIN``) and switches to Initialised.
4. blkback's :func:`frontend_changed` runs :func:`connect_ring` (protocol, persistent grants,
   ``multi-queue-num-queues``, then per ring ``event-channel`` and the ring references; maps
   the ring pages and binds the event channel). A bad value is :func:`xenbus_dev_fatal`: an
   ``error`` node, Closing, and :func:`xen_blkif_disconnect` so nothing stays mapped. On
   success :func:`connect` writes the device keys in one transaction and switches Connected.
5. blkfront's :func:`blkfront_connect` reads ``sectors``, ``info``, ``sector-size`` and the
   features and switches Connected.

Everything runs from the store's FIFO watch queue (:meth:`xbq.xenstore.XenStore.process`), so
the interleaving is the same on every run. :func:`negotiate` drives the whole walk and returns a
:class:`Connection`, which :func:`xbq.blkfront.new_blkfront` and :func:`xbq.blkback.new_blkback`
consume. A refused handshake is not an exception: the Connection says what went wrong.

After a refusal the drivers go on as Linux's do: the frontend sees the backend Closing and
closes (``blkfront_closing`` → ``xenbus_frontend_closed``), the backend follows it to Closed
(the device stays, ``online`` is 1). Both final states are therefore Closed; the backend's
Closing is in :attr:`Connection.transitions` and the error node stays in the store.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xbq.abi import (
    BLKFRONT_MAX_INDIRECT_SEGMENTS,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    MAX_INDIRECT_SEGMENTS,
    SECTOR_SIZE,
    VDISK_CDROM,
    VDISK_READONLY,
    XEN_IO_PROTO_ABI_NATIVE,
    XEN_IO_PROTO_ABI_X86_32,
    XEN_IO_PROTO_ABI_X86_64,
    XEN_PAGE_SIZE,
    XENBUS_MAX_RING_GRANT_ORDER,
    XenbusState,
    const_ring_size,
)
from xbq.errors import XbqError
from xbq.evtchn import (
    evtchn_alloc_unbound,
    evtchn_bind_interdomain,
    evtchn_close,
    evtchn_table,
    new_evtchn_table,
)
from xbq.grant import (
    DOMID_BACKEND,
    DOMID_FRONTEND,
    GNTST_NAMES,
    gnttab_map_grant_ref,
    gnttab_unmap_grant_ref,
    new_maptrack,
    xen_domain,
    xen_maptrack,
)
from xbq.ring import FRONT_RING_DTYPE, XEN_FRONT_RING_INIT, blkif_front_ring
from xbq.xenstore import XBT_NIL, TransactionConflict, XenStore, XenStoreError

#: The toolstack's default virtual device: xvda (major 202, minor 0) = 51712.
DEFAULT_DEVID = 51712
#: ``physical-device`` the hotplug script writes ("major:minor" in hex; 253 = device-mapper).
PHYSICAL_DEVICE = "fd:0"
#: Largest ring order a forced (misbehaving) frontend may use in xbq: 256 pages per ring.
MAX_FORCED_RING_ORDER = 8
#: Largest queue count a forced frontend may write in xbq.
MAX_FORCED_QUEUES = 1024

_OMITTABLE = re.compile(
    r"^(queue-\d+/)?(ring-ref\d*|event-channel)$"
    r"|^(ring-page-order|multi-queue-num-queues|protocol|feature-persistent)$")


# --- xenbus devices and helpers (Linux include/xen/xenbus.h, drivers/xen/xenbus/) -------------


@dataclass(eq=False)
class xenbus_device:
    """``struct xenbus_device``: one end of a split device.

    Attributes
    ----------
    store : XenStore
    nodename : str
        The device's own directory (absolute path).
    domid : int
        The domain this end runs in (the XenStore caller for its accesses).
    side : {"front", "back"}
    state : XenbusState
        This end's state as it last switched it (``dev->state``).
    otherend, otherend_id : str, int
        The peer's directory and domain, read at probe (``talk_to_otherend``).
    otherend_changed : callable
        The driver's ``otherend_changed(dev, state)`` hook, called from the state watch.
    transitions : list of (side, XenbusState)
        Shared log of every state switch, in order.
    errors : list of str
        Messages this end passed to :func:`xenbus_dev_error` / :func:`xenbus_dev_fatal`.
    driver_data : object
        The driver's private structure (``dev_get_drvdata``).
    """

    store: XenStore
    nodename: str
    domid: int
    side: str
    transitions: list
    state: XenbusState = XenbusState.Initialising
    otherend: str | None = None
    otherend_id: int = -1
    otherend_changed: Callable | None = None
    errors: list = field(default_factory=list)
    driver_data: object = None


def _path(dir: str, node: str) -> str:
    return dir if not node else f"{dir}/{node}"


def xenbus_read(dev: xenbus_device, xbt, dir: str, node: str) -> str:
    """``xenbus_read``: the string at ``dir/node``; raises ``XenStoreError`` (ENOENT)."""
    return dev.store.read(_path(dir, node), t=xbt, domid=dev.domid)


_DIGITS = re.compile(r"\s*([0-9]+)\s*")
_SIGNED = re.compile(r"\s*(-?[0-9]+)\s*")


def scan_uint(bits: int) -> Callable[[str], int]:
    """A ``%u``-style conversion for :func:`xenbus_scanf`: ASCII decimal digits (surrounding
    blanks allowed, no sign), of a value below ``2**bits``; ``ValueError`` otherwise.

    Linux's ``vsscanf`` stops at the first non-digit and would truncate an oversized value
    into the field; xbq refuses both, so a ``ring-ref`` of ``18446744073709551616`` or
    ``12abc`` is a malformed key, never a number that wrapped.
    """
    limit = 1 << bits

    def conv(text: str) -> int:
        m = _DIGITS.fullmatch(text)
        if m is None or int(m.group(1)) >= limit:
            raise ValueError(text)
        return int(m.group(1))

    conv.__name__ = f"u{bits}"
    return conv


def scan_int(text: str) -> int:
    """A ``%d``-style conversion: optionally negative ASCII decimal digits."""
    m = _SIGNED.fullmatch(text)
    if m is None or abs(int(m.group(1))) >= 1 << 63:
        raise ValueError(text)
    return int(m.group(1))


scan_u32 = scan_uint(32)  # grant_ref_t, evtchn_port_t, the ring-page-order of a queue
scan_u64 = scan_uint(64)  # sectors and the other unsigned keys


def xenbus_scanf(dev: xenbus_device, xbt, dir: str, node: str, conv=scan_int):
    """``xenbus_scanf`` of one value: ``conv`` applied to ``dir/node``.

    Raises ``XenStoreError``: ENOENT when the node is missing, ERANGE when it does not parse
    (Linux returns these as negative errnos; callers here catch them).
    """
    text = xenbus_read(dev, xbt, dir, node)
    try:
        return conv(text)
    except ValueError:
        raise XenStoreError(errno.ERANGE, f"xenstore: {_path(dir, node)} = {text!r} "
                            "does not parse") from None


def xenbus_read_otherend(dev: xenbus_device, node: str, default=XenStore._MISSING) -> str:
    """Read ``node`` in the peer's directory (``dev->otherend``); ``default`` if missing."""
    return dev.store.read(_path(dev.otherend, node), default, domid=dev.domid)


def xenbus_read_unsigned(dev: xenbus_device, dir: str, node: str, default: int) -> int:
    """``xenbus_read_unsigned``: an unsigned value, or ``default`` if missing or malformed."""
    try:
        return xenbus_scanf(dev, XBT_NIL, dir, node, scan_u64)
    except XenStoreError:
        return default


def xenbus_gather(dev: xenbus_device, xbt, dir: str, *nodes_convs) -> tuple:
    """``xenbus_gather``: read ``(node, conv)`` pairs; raise on the first missing/bad one."""
    return tuple(xenbus_scanf(dev, xbt, dir, node, conv) for node, conv in nodes_convs)


def xenbus_printf(dev: xenbus_device, xbt, dir: str, node: str, fmt: str, *args) -> None:
    """``xenbus_printf``: write ``fmt % args`` to ``dir/node``."""
    dev.store.write(_path(dir, node), fmt % args if args else fmt, t=xbt, domid=dev.domid)


def xenbus_read_driver_state(dev: xenbus_device, path: str) -> XenbusState:
    """``xenbus_read_driver_state``: the ``state`` under ``path``, Unknown if unreadable."""
    try:
        return XenbusState(xenbus_scanf(dev, XBT_NIL, path, "state", scan_u32))
    except (XenStoreError, ValueError):
        return XenbusState.Unknown


def xenbus_switch_state(dev: xenbus_device, state: XenbusState) -> None:
    """``xenbus_switch_state``: write ``state`` in a transaction and remember it.

    As in Linux: nothing happens if the state is unchanged; the write is skipped (the
    transaction aborted) when the ``state`` node has gone, but ``dev->state`` still changes.
    """
    state = XenbusState(state)
    if state == dev.state:
        return
    while True:
        xbt = dev.store.transaction_start()
        try:
            xenbus_scanf(dev, xbt, dev.nodename, "state", scan_u32)
            abort = False
        except XenStoreError:
            abort = True
        if not abort:
            xenbus_printf(dev, xbt, dev.nodename, "state", "%d", int(state))
        try:
            dev.store.transaction_end(xbt, abort=abort)
        except TransactionConflict:
            continue
        break
    dev.state = state
    dev.transitions.append((dev.side, state))


def _home(dev: xenbus_device) -> str:
    return f"/local/domain/{dev.domid}/"


def xenbus_dev_error(dev: xenbus_device, err: int, message: str) -> None:
    """``xenbus_dev_error``: record ``"<-err> <message>"`` in ``error/<nodename>/error``.

    ``nodename`` is the device's path relative to its domain's home, as Linux keeps it
    (``device/vbd/51712``, ``backend/vbd/1/51712``). Like Linux this prints ``-err``, so a
    caller that passes a positive count (blkback's queue check does) gets a negative number.
    """
    dev.errors.append(message)
    rel = dev.nodename[len(_home(dev)):] if dev.nodename.startswith(_home(dev)) \
        else dev.nodename.lstrip("/")
    try:
        dev.store.write(f"{_home(dev)}error/{rel}/error", f"{-err} {message}", domid=dev.domid)
    except XenStoreError:  # Linux only logs "failed to write error node"
        pass


def xenbus_dev_fatal(dev: xenbus_device, err: int, message: str) -> None:
    """``xenbus_dev_fatal``: :func:`xenbus_dev_error`, then switch to Closing."""
    xenbus_dev_error(dev, err, message)
    xenbus_switch_state(dev, XenbusState.Closing)


def xenbus_frontend_closed(dev: xenbus_device) -> None:
    """``xenbus_frontend_closed``: switch to Closed."""
    xenbus_switch_state(dev, XenbusState.Closed)


def xenbus_dev_is_online(dev: xenbus_device) -> bool:
    """``xenbus_dev_is_online``: the toolstack's ``online`` key (0 when missing)."""
    return xenbus_read_unsigned(dev, dev.nodename, "online", 0) != 0


def talk_to_otherend(dev: xenbus_device, key: str) -> None:
    """``talk_to_otherend``: read ``<key>`` (the peer's path) and ``<key>-id``."""
    dev.otherend = xenbus_read(dev, XBT_NIL, dev.nodename, key)
    dev.otherend_id = xenbus_scanf(dev, XBT_NIL, dev.nodename, f"{key}-id", scan_u32)


def xenbus_otherend_changed(dev: xenbus_device, path: str) -> None:
    """The core's ``otherend_changed`` watch: read the peer's state, call the driver's hook.

    Like Linux it ignores events outside the peer's directory and reads the state when the
    event is delivered (it may have moved on since the write that fired it).
    """
    if dev.otherend is None or not path.startswith(dev.otherend):
        return
    state = xenbus_read_driver_state(dev, dev.otherend)
    if dev.otherend_changed is not None:
        dev.otherend_changed(dev, state)


def watch_otherend(dev: xenbus_device) -> None:
    """``watch_otherend``: watch ``<otherend>/state`` (fires once at registration)."""
    dev.store.watch(f"{dev.otherend}/state", f"otherend:{dev.nodename}",
                    lambda path, token: xenbus_otherend_changed(dev, path), domid=dev.domid)


# --- the toolstack ----------------------------------------------------------------------------


def vbd_paths(front_domid: int, back_domid: int, devid: int) -> tuple[str, str]:
    """The frontend and backend directories of virtual device ``devid``."""
    return (f"/local/domain/{front_domid}/device/vbd/{devid}",
            f"/local/domain/{back_domid}/backend/vbd/{front_domid}/{devid}")


def libxl_device_disk_add(store: XenStore, front_domid: int, back_domid: int, devid: int,
                          readonly: bool = False, params: str = "ramdisk") -> tuple[str, str]:
    """Create both directories in one transaction as libxl does; return their paths.

    The guest's home is readable by it, its ``device``/``error``/``data`` subdirectories are
    its own; the frontend directory belongs to the guest (readable by the backend domain), the
    backend directory to the backend domain (readable by the guest). Both ``state`` = 1.
    """
    fe, be = vbd_paths(front_domid, back_domid, devid)
    while True:
        t = store.transaction_start()
        for domid, name in ((back_domid, "Domain-0"), (front_domid, "guest")):
            home = f"/local/domain/{domid}"
            if not store.exists(home, t=t):
                store.write(f"{home}/name", name, t=t)
                store.write(f"{home}/domid", domid, t=t)
                if domid != DOMID_BACKEND:
                    store.set_perms(home, ["n0", f"r{domid}"], t=t)
                    for sub in ("device", "error", "data"):
                        store.mkdir(f"{home}/{sub}", t=t)
                        store.set_perms(f"{home}/{sub}", [f"n{domid}"], t=t)
        store.mkdir(fe, t=t)
        store.set_perms(fe, [f"n{front_domid}", f"r{back_domid}"], t=t)
        for key, value in (("backend", be), ("backend-id", back_domid),
                           ("state", int(XenbusState.Initialising)),
                           ("virtual-device", devid), ("device-type", "disk")):
            store.write(f"{fe}/{key}", value, t=t)
        store.mkdir(be, t=t)
        store.set_perms(be, [f"n{back_domid}", f"r{front_domid}"], t=t)
        for key, value in (("frontend", fe), ("frontend-id", front_domid), ("online", 1),
                           ("removable", 0), ("bootable", 1),
                           ("state", int(XenbusState.Initialising)), ("dev", "xvda"),
                           ("type", "phy"), ("mode", "r" if readonly else "w"),
                           ("device-type", "disk"), ("discard-enable", 1), ("params", params)):
            store.write(f"{be}/{key}", value, t=t)
        try:
            store.transaction_end(t)
        except TransactionConflict:
            continue
        return fe, be


# --- blkback (drivers/block/xen-blkback/xenbus.c) ---------------------------------------------


@dataclass(eq=False)
class xen_blkif_ring:
    """The set-up half of blkback's ``struct xen_blkif_ring``: what ``connect_ring`` mapped."""

    index: int
    ring_refs: list
    evtchn: int  # the frontend's port, as read from the store
    back_handles: list = field(default_factory=list)
    back_port: int = -1  # the bound local port ("irq"); -1 until bound


@dataclass(eq=False)
class backend_info:
    """blkback's ``struct backend_info`` plus the set-up fields of ``struct xen_blkif``.

    The module parameters live here too (``xenblk_max_queues``, ``xen_blkif_max_ring_order``,
    ``feature_persistent``), as do the device properties the toolstack would give it.
    """

    dev: xenbus_device
    front: xen_domain
    back: xen_domain
    evtchn: evtchn_table
    maptrack: xen_maptrack
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
        h = int(gnttab_map_grant_ref(be.front.gnttab, ref, be.back.domid, False, be.maptrack))
        if h < 0:
            for done in handles:
                gnttab_unmap_grant_ref(be.front.gnttab, be.maptrack, done)
            xenbus_dev_fatal(dev, h, f"mapping in shared page {ref} from domain "
                                     f"{dev.otherend_id} ({GNTST_NAMES.get(h, h)})")
            return -errno.ENOENT
        handles.append(h)
    ring.back_handles = handles
    try:
        ring.back_port = evtchn_bind_interdomain(be.evtchn, be.back.domid, dev.otherend_id,
                                                 ring.evtchn)
    except ValueError:
        for h in handles:
            gnttab_unmap_grant_ref(be.front.gnttab, be.maptrack, h)
        ring.back_handles = []
        return -errno.EINVAL
    return 0


def xen_blkif_disconnect(be: backend_info) -> None:
    """blkback ``xen_blkif_disconnect``: unbind and unmap every ring (idempotent)."""
    for ring in be.rings:
        if ring.back_port >= 0:
            evtchn_close(be.evtchn, ring.back_port)
            ring.back_port = -1
        for h in ring.back_handles:
            gnttab_unmap_grant_ref(be.front.gnttab, be.maptrack, h)
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


# --- blkfront (drivers/block/xen-blkfront.c) --------------------------------------------------


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
    """The xenbus half of blkfront's ``struct blkfront_info`` (the ring half is
    :data:`xbq.blkfront.blkfront_info`), with the module parameters it was loaded with."""

    dev: xenbus_device
    front: xen_domain
    evtchn: evtchn_table
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
    (ring ``k`` starts at ``first + k * 2**order``), so the engines can view all shared rings
    as one ``(nr_rings, bytes)`` array of guest memory.
    """
    npages = info.nr_ring_pages
    info.rinfo = []
    if info.nr_rings == 0:
        return
    first = info.front.alloc_pages(info.nr_rings * npages)
    for k in range(info.nr_rings):
        f = first + k * npages
        sring = info.front.pages[f:f + npages].reshape(-1)
        XEN_FRONT_RING_INIT(blkif_front_ring(sring, np.zeros(1, FRONT_RING_DTYPE)))
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
    _printf_unless_omitted(info, xbt, dir, "event-channel", "%u", rinfo.evtchn)


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
    indirect = min(indirect, info.xen_blkif_max_segments)
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


# --- the public handshake ---------------------------------------------------------------------


@dataclass(eq=False)
class RingConnection:
    """One negotiated ring, as both ends see it.

    Attributes
    ----------
    index : int
        Queue number (``queue-<index>``).
    ring_refs : list of int
        The grant references of the ring's pages, in page order.
    first_frame : int
        The frontend's first page of the ring (the pages are contiguous).
    sring : numpy.ndarray
        uint8 view of the ring's pages in frontend memory, ``4096 << order`` bytes.
    front_port, back_port : int
        The bound event-channel pair.
    back_handles : list of int
        The backend's grant handles (in :attr:`Connection.maptrack`) of the ring pages.
    """

    index: int
    ring_refs: list
    first_frame: int
    sring: np.ndarray
    front_port: int
    back_port: int
    back_handles: list


@dataclass(eq=False)
class Connection:
    """The outcome of :func:`negotiate`: the store, both ends' states and what they agreed.

    ``nr_rings`` is 0 and ``rings`` empty unless the handshake connected; ``error`` is the
    first fatal error either end reported (the root cause), ``None`` when none did.
    ``features``: ``feature_persistent`` (both ends offered persistent grants),
    ``max_indirect_segments`` (0 when indirect requests are not used), ``feature_flush_cache``,
    ``feature_barrier``, ``feature_discard`` (what the backend advertised).
    """

    store: XenStore
    front_state: XenbusState
    back_state: XenbusState
    nr_rings: int
    ring_page_order: int
    nr_ents: int
    error: str | None
    transitions: list
    front: xen_domain
    back: xen_domain
    evtchn: evtchn_table
    maptrack: xen_maptrack
    rings: list
    features: dict
    sectors: int
    sector_size: int
    info: int
    frontend_path: str
    backend_path: str

    @property
    def connected(self) -> bool:
        """Both ends Connected, at least one ring, no error."""
        return (self.front_state == XenbusState.Connected
                and self.back_state == XenbusState.Connected
                and self.nr_rings >= 1 and self.error is None)


def _check_int(name: str, value, low: int, high: int | None = None, none_ok: bool = False):
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise XbqError(f"{name} must be an integer {bound}, not {value!r}")


def negotiate(*, vcpus: int = 16, max_queues: int = 4, backend_max_queues: int | None = None,
              dom0_vcpus: int = 16, max_ring_page_order: int = 0,
              backend_max_ring_page_order: int = 4, feature_persistent: bool = True,
              backend_feature_persistent: bool = True,
              backend_max_indirect_segments: int | None = MAX_INDIRECT_SEGMENTS,
              max_indirect_segments: int = BLKFRONT_MAX_INDIRECT_SEGMENTS,
              old_backend: bool = False, sectors: int = 2**21, sector_size: int = SECTOR_SIZE,
              readonly: bool = False, frontend_num_queues: int | None = None,
              frontend_ring_page_order: int | None = None, omit_keys=(),
              front: xen_domain | None = None, back: xen_domain | None = None,
              evtchn: evtchn_table | None = None, front_pages: int | None = None,
              devid: int = DEFAULT_DEVID, backend_flush: bool = True,
              backend_discard: bool = True) -> Connection:
    """Run the whole blkfront/blkback XenStore handshake and return its outcome.

    Parameters
    ----------
    vcpus : int
        Online vCPUs of the guest; blkfront's ``max_queues`` is capped to it.
    max_queues : int
        blkfront's ``max_queues`` module parameter (default 4; 0 behaves as 1).
    backend_max_queues : int or None
        blkback's ``max_queues`` (``xenblk_max_queues``); None or 0 means ``dom0_vcpus``.
    dom0_vcpus : int
        Online vCPUs of the backend domain.
    max_ring_page_order, backend_max_ring_page_order : int
        The module parameters ``max_ring_page_order`` of blkfront (default 0) and blkback
        (default 4); values above 4 are clamped to 4 as both drivers do at init.
    feature_persistent, backend_feature_persistent : bool
        Each end's ``feature_persistent`` parameter; grants are persistent only if both say so.
    backend_max_indirect_segments : int or None
        ``feature-max-indirect-segments`` blkback advertises (256); None writes no key.
    max_indirect_segments : int
        blkfront's ``max_indirect_segments`` parameter (32; below 11 it is raised to 11 as
        ``xlblk_init`` does). Indirect requests carry min(this, the backend's) segments, and are
        off when that is 11 or less.
    old_backend : bool
        A pre-multi-queue blkback: no ``multi-queue-max-queues``, reads only top-level keys.
    sectors, sector_size, readonly : int, int, bool
        The device (512-byte sectors; logical block size; the toolstack's ``mode`` "r").
    frontend_num_queues, frontend_ring_page_order : int or None
        Force a misbehaving frontend's queue count / ring order, bypassing its negotiation.
    omit_keys : iterable of str
        Keys the frontend "forgets" to write: a name relative to its directory
        (``queue-1/event-channel``) or a bare key name, which matches in every queue.
    front, back, evtchn : optional
        Domains (frontend domid 1, backend 0 by default) and the event-channel table to use.
    front_pages : int or None
        Pages of the frontend domain to create (default: enough for the rings and blkfront's
        grant pools, at least 2**15).
    devid : int
        The virtual device number (51712 = xvda).
    backend_flush, backend_discard : bool
        Whether the device has a write cache (``feature-flush-cache``/``feature-barrier``) and
        supports discard.

    Returns
    -------
    Connection
        ``connected`` is True on success. A refused handshake returns ``error`` set and
        ``nr_rings`` 0, with the error node in ``store``.

    Examples
    --------
    >>> conn = negotiate(vcpus=2)
    >>> conn.connected, conn.nr_rings, conn.nr_ents
    (True, 2, 32)
    >>> bad = negotiate(frontend_num_queues=0)
    >>> bad.connected, bad.error
    (False, 'backend: guest requested 0 queues, exceeding the maximum of 16.')
    """
    _check_int("vcpus", vcpus, 1)
    _check_int("dom0_vcpus", dom0_vcpus, 1)
    _check_int("max_queues", max_queues, 0)
    _check_int("backend_max_queues", backend_max_queues, 0, none_ok=True)
    _check_int("max_ring_page_order", max_ring_page_order, 0)
    _check_int("backend_max_ring_page_order", backend_max_ring_page_order, 0)
    _check_int("backend_max_indirect_segments", backend_max_indirect_segments, 0, none_ok=True)
    _check_int("max_indirect_segments", max_indirect_segments, 0)
    _check_int("sectors", sectors, 1)
    _check_int("sector_size", sector_size, SECTOR_SIZE)
    if sector_size % SECTOR_SIZE:
        raise XbqError(f"sector_size must be a multiple of {SECTOR_SIZE}, not {sector_size}")
    _check_int("frontend_num_queues", frontend_num_queues, 0, MAX_FORCED_QUEUES, none_ok=True)
    _check_int("frontend_ring_page_order", frontend_ring_page_order, 0, MAX_FORCED_RING_ORDER,
               none_ok=True)
    _check_int("devid", devid, 1)
    _check_int("front_pages", front_pages, 1, none_ok=True)
    if isinstance(omit_keys, str):
        omit_keys = (omit_keys,)
    omit_keys = tuple(omit_keys)
    for key in omit_keys:
        if not isinstance(key, str) or not _OMITTABLE.match(key):
            raise XbqError(f"cannot omit {key!r}: the frontend writes ring-ref, ring-ref<N>, "
                           "event-channel (optionally under queue-<N>/), ring-page-order, "
                           "multi-queue-num-queues, protocol, feature-persistent")

    # Module init: both drivers clamp their parameters (xlblk_init, xen_blkif_init).
    fe_max_order = min(max_ring_page_order, XENBUS_MAX_RING_GRANT_ORDER)
    be_max_order = min(backend_max_ring_page_order, XENBUS_MAX_RING_GRANT_ORDER)
    fe_max_queues = min(max_queues, vcpus)
    fe_max_segments = max(max_indirect_segments, BLKIF_MAX_SEGMENTS_PER_REQUEST)
    be_max_queues = backend_max_queues or dom0_vcpus

    q_bound = max(1, fe_max_queues if frontend_num_queues is None else frontend_num_queues)
    o_bound = fe_max_order if frontend_ring_page_order is None else frontend_ring_page_order
    ring_pages = q_bound << o_bound
    # blkfront's grant pool (xbq.blkfront.new_blkfront): a page per grant and ring slot, for
    # at most as many rings as the backend accepts.
    pool = (fe_max_segments + -(-fe_max_segments // 512)) \
        * const_ring_size(XEN_PAGE_SIZE << o_bound) * min(q_bound, be_max_queues)
    if front is None:
        need = ring_pages + pool + 4096
        front = xen_domain(DOMID_FRONTEND, front_pages or max(1 << 15, need),
                           max(1 << 16, need + 64))
    if back is None:
        back = xen_domain(DOMID_BACKEND, 16, 64)
    if front.domid == back.domid:
        raise XbqError(f"frontend and backend must be different domains (both {front.domid})")
    if evtchn is None:
        evtchn = new_evtchn_table(2 * q_bound + 64)
    maptrack = new_maptrack(max(be_max_queues, 1) << XENBUS_MAX_RING_GRANT_ORDER)

    store = XenStore()
    transitions: list = []
    fe_path, be_path = libxl_device_disk_add(store, front.domid, back.domid, devid, readonly)
    transitions += [("back", XenbusState.Initialising), ("front", XenbusState.Initialising)]

    # dom0: blkback probes the new device and reaches InitWait.
    bdev = xenbus_device(store, be_path, back.domid, "back", transitions)
    bdev.otherend_changed = frontend_changed
    talk_to_otherend(bdev, "frontend")
    be = backend_info(bdev, front, back, evtchn, maptrack, be_max_queues, be_max_order,
                      backend_feature_persistent, backend_max_indirect_segments, old_backend,
                      sectors, sector_size, backend_flush, backend_discard)
    bdev.driver_data = be
    xen_blkbk_probe(be)
    watch_otherend(bdev)
    store.process()
    # The hotplug script reports the physical device; blkback opens it.
    store.write(f"{be_path}/physical-device", PHYSICAL_DEVICE)
    store.write(f"{be_path}/hotplug-status", "connected")
    store.process()
    # The guest boots: blkfront probes, and the handshake runs from the watch queue.
    fdev = xenbus_device(store, fe_path, front.domid, "front", transitions)
    fdev.otherend_changed = blkback_changed
    talk_to_otherend(fdev, "backend")
    info = blkfront_dev_info(fdev, front, evtchn, fe_max_queues, fe_max_order,
                             feature_persistent, fe_max_segments, frontend_num_queues,
                             frontend_ring_page_order, omit_keys)
    fdev.driver_data = info
    if blkfront_probe(info) == 0:
        watch_otherend(fdev)
    store.process()

    first_error = _first_error(transitions, fdev, bdev)
    ok = (first_error is None and fdev.state == XenbusState.Connected
          and bdev.state == XenbusState.Connected and be.nr_rings == info.nr_rings >= 1)
    rings = []
    if ok:
        for fr, br in zip(info.rinfo, be.rings, strict=True):
            rings.append(RingConnection(fr.index, list(fr.ring_refs), fr.first_frame, fr.sring,
                                        fr.evtchn, br.back_port, list(br.back_handles)))
    features = dict(info.features) if ok else {}
    if ok:
        # One flag for both ends: persistent only where both use it. (A frontend that offers
        # but forgets to write feature-persistent would use it alone in Linux.)
        features["feature_persistent"] = bool(features["feature_persistent"]
                                              and be.feature_gnt_persistent)
    order = info.ring_page_order
    return Connection(
        store=store, front_state=fdev.state, back_state=bdev.state,
        nr_rings=len(rings), ring_page_order=order,
        nr_ents=const_ring_size(XEN_PAGE_SIZE << order),
        error=first_error if ok or first_error else (
            f"handshake did not complete (frontend {fdev.state.name}, "
            f"backend {bdev.state.name})"),
        transitions=transitions, front=front, back=back, evtchn=evtchn, maptrack=maptrack,
        rings=rings, features=features, sectors=info.sectors,
        sector_size=info.sector_size, info=info.binfo, frontend_path=fe_path,
        backend_path=be_path)


def _first_error(transitions, fdev: xenbus_device, bdev: xenbus_device) -> str | None:
    """The first error reported, by the side that reported one first."""
    if fdev.errors and bdev.errors:
        # Whichever side switched to Closing first failed first.
        for side, state in transitions:
            if state == XenbusState.Closing:
                return (f"frontend: {fdev.errors[0]}" if side == "front"
                        else f"backend: {bdev.errors[0]}")
    if bdev.errors:
        return f"backend: {bdev.errors[0]}"
    if fdev.errors:
        return f"frontend: {fdev.errors[0]}"
    return None
