"""xenbus: the device model both split drivers use over the XenStore (Linux
``include/xen/xenbus.h``, ``drivers/xen/xenbus/``).

A :class:`xenbus_device` is one end of a split device: its XenStore directory, its domain,
its state as it last switched it, the peer's directory, and the driver's hook called when
the peer's ``state`` changes. The helpers are the kernel's: ``xenbus_read``,
``xenbus_scanf`` (with ``%u``-style conversions that refuse garbage: :func:`scan_uint`),
``xenbus_read_unsigned``, ``xenbus_gather``, ``xenbus_printf``, ``xenbus_switch_state``
(in a transaction, skipped when the node has gone), ``xenbus_dev_error`` /
``xenbus_dev_fatal`` (an error node, then Closing), ``talk_to_otherend`` and
``watch_otherend``. The blkif drivers' halves are :mod:`xbq.blkif.blkfront_xenbus` and
:mod:`xbq.blkif.blkback_xenbus`; :func:`xbq.blkif.negotiate.negotiate` drives the handshake.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from xbq.xen.abi import XenbusState
from xbq.xen.xenstore import XBT_NIL, TransactionConflict, XenStore, XenStoreError

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
