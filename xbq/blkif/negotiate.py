"""The blkif handshake, end to end: the toolstack creates the disk, both drivers walk their
state machines over the XenStore, and :func:`negotiate` returns what they agreed.

This is the set-up half of the protocol (reference §4), with the multi-queue and multi-page
rules of the 2015–2016 series:

1. The toolstack (:func:`libxl_device_disk_add`) writes the frontend and backend
   directories in one transaction, both ``state`` = Initialising, with xenstored
   permissions (each end owns its directory, the other end may read it).
2. blkback's probe (:func:`xbq.blkif.blkback_xenbus.xen_blkbk_probe`) advertises its maxima
   and switches to InitWait; the hotplug script writes ``physical-device`` and blkback opens
   the vbd.
3. blkfront's probe picks the number of rings (``negotiate_mq``); when the backend's state
   watch shows InitWait, ``talk_to_blkback`` sets the rings up, writes the keys of §4.3 in
   one transaction and switches to Initialised.
4. blkback's ``frontend_changed`` runs ``connect_ring``; a bad value is
   ``xenbus_dev_fatal`` (an ``error`` node, Closing) and nothing stays mapped. On success
   ``connect`` writes the device keys and switches Connected.
5. blkfront's ``blkfront_connect`` reads the device and switches Connected.

Everything runs from the store's FIFO watch queue, so the interleaving is the same on every
run. A refused handshake is not an exception: the :class:`Connection` says what went wrong.
After a refusal the drivers go on as Linux's do: the frontend sees the backend Closing and
closes, the backend follows it to Closed; the backend's Closing is in
:attr:`Connection.transitions` and the error node stays in the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from xbq.blkif.blkback_xenbus import backend_info, frontend_changed, xen_blkbk_probe
from xbq.blkif.blkfront import blkfront_grant_pool
from xbq.blkif.blkfront_xenbus import blkback_changed, blkfront_dev_info, blkfront_probe
from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKFRONT_MAX_INDIRECT_SEGMENTS,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    MAX_INDIRECT_SEGMENTS,
    SECTOR_SIZE,
    XEN_PAGE_SIZE,
    XENBUS_MAX_RING_GRANT_ORDER,
    XenbusState,
    const_ring_size,
)
from xbq.xen.evtchn import evtchn_port, new_evtchn_table
from xbq.xen.grant import (
    DOMID_BACKEND,
    DOMID_FRONTEND,
    MAPTRACK_HEAD_DTYPE,
    new_maptrack,
    xen_domain,
)
from xbq.xen.xenbus import talk_to_otherend, watch_otherend, xenbus_device
from xbq.xen.xenstore import TransactionConflict, XenStore

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
        The bound event-channel pair, each a port number in its own domain's space (what
        XenStore's ``event-channel`` carries and the backend's bind names).
    front_slot, back_slot : int
        The same two ports as slots of :attr:`Connection.evtchn`, the handles the drivers'
        kernels notify through (:mod:`xbq.xen.evtchn`).
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
    front_slot: int
    back_slot: int


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
    evtchn: np.ndarray
    maptrack: np.ndarray
    mt_head: np.ndarray
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
              evtchn: np.ndarray | None = None, front_pages: int | None = None,
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
    # blkfront's grant pool (new_blkfront): a page per grant and ring slot, for at most as
    # many rings as the backend accepts.
    pool = blkfront_grant_pool(min(fe_max_segments, MAX_INDIRECT_SEGMENTS),
                               const_ring_size(XEN_PAGE_SIZE << o_bound))[1] \
        * min(q_bound, be_max_queues)
    if front is None:
        need = ring_pages + pool + 4096
        front = xen_domain(DOMID_FRONTEND, front_pages or max(1 << 15, need),
                           max(1 << 16, need + 64))
    if back is None:
        back = xen_domain(DOMID_BACKEND, 16, 64)
    if front.domid == back.domid:
        raise XbqError(f"frontend and backend must be different domains (both {front.domid})")
    if evtchn is None:
        evtchn = new_evtchn_table(q_bound + 32, domains=(back.domid, front.domid))
    mt_head = np.zeros(1, MAPTRACK_HEAD_DTYPE)
    maptrack = new_maptrack(max(be_max_queues, 1) << XENBUS_MAX_RING_GRANT_ORDER, mt_head[0])

    store = XenStore()
    transitions: list = []
    fe_path, be_path = libxl_device_disk_add(store, front.domid, back.domid, devid, readonly)
    transitions += [("back", XenbusState.Initialising), ("front", XenbusState.Initialising)]

    # dom0: blkback probes the new device and reaches InitWait.
    bdev = xenbus_device(store, be_path, back.domid, "back", transitions)
    bdev.otherend_changed = frontend_changed
    talk_to_otherend(bdev, "frontend")
    be = backend_info(bdev, front, back, evtchn, maptrack, mt_head, be_max_queues, be_max_order,
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
            rings.append(RingConnection(
                fr.index, list(fr.ring_refs), fr.first_frame, fr.sring,
                evtchn_port(evtchn, fr.evtchn), evtchn_port(evtchn, br.back_port),
                list(br.back_handles), fr.evtchn, br.back_port))
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
        mt_head=mt_head,
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
