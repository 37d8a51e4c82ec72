"""An in-memory XenStore: a tree of string values with permissions, transactions and watches.

The model follows ``xenstored`` closely enough for the xenbus handshake to behave as on a real
host, and deterministically:

* **Paths** are absolute (``/local/domain/0/backend/vbd/1/51712/state``); a relative path is
  taken relative to the caller's home ``/local/domain/<domid>``, as xenstored does. Writing a
  node creates its missing parents with empty values. Values are strings (``bytes`` in
  xenstored; xbq stores text).
* **Permissions** (optional) are xenstored's: a node's list ``["n0", "r1"]`` names its owner
  first (with the access everybody else gets) and then per-domain grants (``r`` read, ``w``
  write, ``b`` both, ``n`` none). Dom0 (the default caller) is privileged; a new node inherits
  its parent's list with the creating domain as owner.
* **Transactions** snapshot the store: reads and writes inside see the transaction's own view,
  and :meth:`XenStore.transaction_end` commits atomically, or raises
  :class:`TransactionConflict` (``EAGAIN``) and applies nothing if a node that the
  transaction read or wrote was changed by someone else meanwhile. Callers retry, as the
  kernel's ``again:`` loops do.
* **Watches** fire for a change to the watched node or any descendant (and, for ``rm``, for
  watches below the removed node), once on registration, and at commit for transactional
  changes. Firing only *queues* ``(callback, path, token)``; :meth:`XenStore.process` runs
  the queue in FIFO order, callbacks may queue more, so one thread (``xenwatch``) delivers
  every event in a deterministic order. A watch callback that reads the store sees the
  current value, not the one that fired it, exactly as on a real host.

Errors are :class:`XenStoreError` subclasses carrying the errno xenstored would return:
:class:`XenStoreNoEntry` (``ENOENT``), :class:`XenStorePermission` (``EACCES``),
:class:`TransactionConflict` (``EAGAIN``), and ``EINVAL`` for a malformed path.

Examples
--------
>>> xs = XenStore()
>>> xs.write("/local/domain/1/name", "guest")
>>> xs.read("/local/domain/1/name")
'guest'
>>> xs.directory("/local/domain")
['1']
>>> xs.read("/nope", None) is None
True
"""

from __future__ import annotations

import errno
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from xbq.errors import XbqError

DOM0 = 0
_SEGMENT = re.compile(r"^[A-Za-z0-9_@\-.]+$")
_PERM = re.compile(r"^[nrwb]\d+$")

#: Upper bound on watch events one :meth:`XenStore.process` call delivers (a livelock guard).
MAX_WATCH_EVENTS = 1_000_000

WatchCallback = Callable[[str, str], None]


class XenStoreError(XbqError):
    """A XenStore operation failed; ``errno`` is what xenstored would have returned."""

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


class XenStoreNoEntry(XenStoreError):
    """The node does not exist (``ENOENT``)."""

    def __init__(self, path: str):
        super().__init__(errno.ENOENT, f"xenstore: no such node {path}")
        self.path = path


class XenStorePermission(XenStoreError):
    """The calling domain may not access the node (``EACCES``)."""

    def __init__(self, path: str, domid: int, what: str):
        super().__init__(errno.EACCES, f"xenstore: domain {domid} may not {what} {path}")
        self.path = path


class TransactionConflict(XenStoreError):
    """The transaction touched a node that changed meanwhile; nothing was applied (``EAGAIN``)."""

    def __init__(self, tid: int):
        super().__init__(errno.EAGAIN, f"xenstore: transaction {tid} conflicted; retry")


@dataclass
class _Node:
    value: str
    perms: tuple[str, ...]
    gen: int  # store generation of the last change to this node


@dataclass
class xenbus_transaction:
    """An open transaction (Linux ``struct xenbus_transaction``): its id and private view."""

    id: int
    nodes: dict[str, _Node]
    base_gen: dict[str, int | None] = field(default_factory=dict)  # node -> gen at first touch
    changed: list[tuple[str, str]] = field(default_factory=list)  # (path, "write"|"rm") order
    open: bool = True


#: ``XBT_NIL``: no transaction.
XBT_NIL = None


@dataclass
class _Watch:
    path: str
    token: str
    callback: WatchCallback


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _is_child(child: str, parent: str) -> bool:
    """True if ``child`` is ``parent`` or below it."""
    return parent == "/" or child == parent or child.startswith(parent + "/")


def _parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


class XenStore:
    """The store: a flat map from absolute path to node, plus watches and transactions.

    Parameters
    ----------
    None. The store starts with the root ``/`` (owned by dom0, readable by nobody else) and
    grows as nodes are written.
    """

    def __init__(self):
        self._nodes: dict[str, _Node] = {"/": _Node("", ("n0",), 0)}
        self._gen = 0
        self._next_tid = 1
        self._watches: list[_Watch] = []
        self._queue: deque[tuple[_Watch, str]] = deque()
        self.watch_events = 0  # events delivered so far

    # --- paths and permissions --------------------------------------------------------------

    def canonical(self, path: str, domid: int = DOM0) -> str:
        """Return the absolute, normalised form of ``path`` for caller ``domid``."""
        if not isinstance(path, str) or not path or "//" in path.rstrip("/") \
                or (len(path) > 1 and path.endswith("/")):
            raise XenStoreError(errno.EINVAL, f"xenstore: invalid path {path!r}")
        if not path.startswith("/"):
            path = f"/local/domain/{domid}/{path}"
        parts = _split(path)
        if any(not _SEGMENT.match(p) for p in parts):
            raise XenStoreError(errno.EINVAL, f"xenstore: invalid path {path!r}")
        return "/" + "/".join(parts)

    @staticmethod
    def _allowed(perms: tuple[str, ...], domid: int, want: str) -> bool:
        if domid == DOM0:
            return True
        owner = int(perms[0][1:])
        if domid == owner:
            return True
        access = perms[0][0]  # what everybody else gets
        for p in perms[1:]:
            if int(p[1:]) == domid:
                access = p[0]
                break
        return access == "b" or access == want

    def _view(self, t: xenbus_transaction | None) -> dict[str, _Node]:
        if t is None:
            return self._nodes
        if not t.open:
            raise XenStoreError(errno.EINVAL, f"xenstore: transaction {t.id} is closed")
        return t.nodes

    def _touch(self, t: xenbus_transaction | None, path: str) -> None:
        if t is not None and path not in t.base_gen:
            node = t.nodes.get(path)  # the snapshot's generation, before t changes it
            t.base_gen[path] = None if node is None else node.gen

    # --- reads ------------------------------------------------------------------------------

    _MISSING = object()

    def read(self, path: str, default=_MISSING, *, t: xenbus_transaction | None = None,
             domid: int = DOM0) -> str:
        """``XS_READ``: the value of ``path``; ``default`` (if given) when it does not exist.

        Raises :class:`XenStoreNoEntry` for a missing node when no default is given, and
        :class:`XenStorePermission` when ``domid`` may not read it.
        """
        path = self.canonical(path, domid)
        nodes = self._view(t)
        self._touch(t, path)
        node = nodes.get(path)
        if node is None:
            if default is not XenStore._MISSING:
                return default
            raise XenStoreNoEntry(path)
        if not self._allowed(node.perms, domid, "r"):
            raise XenStorePermission(path, domid, "read")
        return node.value

    def exists(self, path: str, *, t: xenbus_transaction | None = None,
               domid: int = DOM0) -> bool:
        """True if ``path`` exists (and ``domid`` may read it)."""
        try:
            self.read(path, t=t, domid=domid)
        except (XenStoreNoEntry, XenStorePermission):
            return False
        return True

    def directory(self, path: str, *, t: xenbus_transaction | None = None,
                  domid: int = DOM0) -> list[str]:
        """``XS_DIRECTORY``: names of the children of ``path``, sorted."""
        path = self.canonical(path, domid)
        nodes = self._view(t)
        self._touch(t, path)
        node = nodes.get(path)
        if node is None:
            raise XenStoreNoEntry(path)
        if not self._allowed(node.perms, domid, "r"):
            raise XenStorePermission(path, domid, "list")
        prefix = "/" if path == "/" else path + "/"
        return sorted(p[len(prefix):] for p in nodes
                      if p.startswith(prefix) and "/" not in p[len(prefix):] and p != "/")

    def get_perms(self, path: str, *, t: xenbus_transaction | None = None,
                  domid: int = DOM0) -> list[str]:
        """``XS_GET_PERMS``: the node's permission list, owner first."""
        path = self.canonical(path, domid)
        node = self._view(t).get(path)
        if node is None:
            raise XenStoreNoEntry(path)
        return list(node.perms)

    # --- writes -----------------------------------------------------------------------------

    def _changed(self, t: xenbus_transaction | None, path: str, kind: str) -> None:
        if t is None:
            self._fire(path, kind)
        else:
            t.changed.append((path, kind))

    def _check_write(self, nodes: dict[str, _Node], path: str, domid: int) -> None:
        """Raise unless ``domid`` may write ``path`` (or create it under its nearest parent)."""
        probe = path
        while probe not in nodes:
            probe = _parent(probe)
        if not self._allowed(nodes[probe].perms, domid, "w"):
            raise XenStorePermission(path, domid, "write")

    def _create(self, nodes: dict[str, _Node], path: str, value: str, domid: int,
                t: xenbus_transaction | None) -> None:
        missing = []
        probe = path
        while probe not in nodes:
            missing.append(probe)
            probe = _parent(probe)
        perms = nodes[probe].perms
        if domid != DOM0:
            perms = (perms[0][0] + str(domid),) + perms[1:]
        self._gen += 1
        for p in reversed(missing):
            self._touch(t, p)
            nodes[p] = _Node("", perms, self._gen)
        nodes[path].value = value

    def write(self, path: str, value, *, t: xenbus_transaction | None = None,
              domid: int = DOM0) -> None:
        """``XS_WRITE``: set ``path`` to ``str(value)``, creating missing parents."""
        path = self.canonical(path, domid)
        nodes = self._view(t)
        self._check_write(nodes, path, domid)
        self._touch(t, path)
        node = nodes.get(path)
        if node is None:
            self._create(nodes, path, str(value), domid, t)
        else:
            self._gen += 1
            nodes[path] = _Node(str(value), node.perms, self._gen)
        self._changed(t, path, "write")

    def mkdir(self, path: str, *, t: xenbus_transaction | None = None,
              domid: int = DOM0) -> None:
        """``XS_MKDIR``: create ``path`` (empty value) if it does not exist."""
        path = self.canonical(path, domid)
        nodes = self._view(t)
        self._touch(t, path)
        if path in nodes:
            return
        self._check_write(nodes, path, domid)
        self._create(nodes, path, "", domid, t)
        self._changed(t, path, "write")

    def rm(self, path: str, *, t: xenbus_transaction | None = None,
           domid: int = DOM0) -> None:
        """``XS_RM``: remove ``path`` and everything below it (``ENOENT`` if missing)."""
        path = self.canonical(path, domid)
        if path == "/":
            raise XenStoreError(errno.EINVAL, "xenstore: cannot remove /")
        nodes = self._view(t)
        self._touch(t, path)
        if path not in nodes:
            raise XenStoreNoEntry(path)
        if not self._allowed(nodes[path].perms, domid, "w"):
            raise XenStorePermission(path, domid, "remove")
        for p in [p for p in nodes if _is_child(p, path)]:
            self._touch(t, p)
            del nodes[p]
        self._gen += 1
        self._changed(t, path, "rm")

    def set_perms(self, path: str, perms, *, t: xenbus_transaction | None = None,
                  domid: int = DOM0) -> None:
        """``XS_SET_PERMS``: replace the permission list of ``path`` (owner first)."""
        path = self.canonical(path, domid)
        perms = tuple(perms)
        if not perms or any(not _PERM.match(p) for p in perms):
            raise XenStoreError(errno.EINVAL, f"xenstore: bad permissions {perms!r}")
        nodes = self._view(t)
        self._touch(t, path)
        node = nodes.get(path)
        if node is None:
            raise XenStoreNoEntry(path)
        if domid != DOM0 and int(node.perms[0][1:]) != domid:
            raise XenStorePermission(path, domid, "set permissions of")
        self._gen += 1
        nodes[path] = _Node(node.value, perms, self._gen)
        self._changed(t, path, "write")

    # --- transactions -----------------------------------------------------------------------

    def transaction_start(self) -> xenbus_transaction:
        """``XS_TRANSACTION_START``: open a transaction on a snapshot of the store."""
        snapshot = {p: _Node(n.value, n.perms, n.gen) for p, n in self._nodes.items()}
        t = xenbus_transaction(self._next_tid, snapshot)
        self._next_tid += 1
        return t

    def transaction_end(self, t: xenbus_transaction, abort: bool = False) -> None:
        """``XS_TRANSACTION_END``: commit ``t`` atomically, or drop it if ``abort``.

        Raises :class:`TransactionConflict` (and applies nothing) if a node ``t`` read or
        wrote was changed outside it after ``t`` first touched it.
        """
        if not t.open:
            raise XenStoreError(errno.EINVAL, f"xenstore: transaction {t.id} is closed")
        t.open = False
        if abort:
            return
        for path, gen in t.base_gen.items():
            node = self._nodes.get(path)
            if (None if node is None else node.gen) != gen:
                raise TransactionConflict(t.id)
        for path in t.base_gen:
            mine = t.nodes.get(path)
            if mine is None:
                self._nodes.pop(path, None)
            else:
                self._nodes[path] = mine
        for path, kind in t.changed:
            self._fire(path, kind)

    # --- watches ----------------------------------------------------------------------------

    def watch(self, path: str, token: str, callback: WatchCallback, *,
              domid: int = DOM0) -> None:
        """``XS_WATCH``: call ``callback(path, token)`` for changes at or below ``path``.

        The watch fires once at registration (with the watched path), as xenstored's does.
        Events are queued; :meth:`process` delivers them.
        """
        path = self.canonical(path, domid)
        w = _Watch(path, token, callback)
        self._watches.append(w)
        self._queue.append((w, path))

    def unwatch(self, path: str, token: str, *, domid: int = DOM0) -> None:
        """``XS_UNWATCH``: remove the watch and drop its queued events."""
        path = self.canonical(path, domid)
        gone = [w for w in self._watches if w.path == path and w.token == token]
        if not gone:
            raise XenStoreNoEntry(path)
        self._watches = [w for w in self._watches if w not in gone]
        self._queue = deque(ev for ev in self._queue if ev[0] not in gone)

    def _fire(self, path: str, kind: str) -> None:
        for w in self._watches:
            if _is_child(path, w.path):
                self._queue.append((w, path))
            elif kind == "rm" and _is_child(w.path, path):
                self._queue.append((w, w.path))

    @property
    def pending_watch_events(self) -> int:
        """Events queued and not yet delivered."""
        return len(self._queue)

    def process(self, max_events: int = MAX_WATCH_EVENTS) -> int:
        """Deliver queued watch events in FIFO order until none is left; return how many.

        This is the ``xenwatch`` thread: one event at a time, callbacks may queue more.
        """
        count = 0
        while self._queue:
            if count >= max_events:
                raise XbqError(f"xenstore: more than {max_events} watch events; livelock?")
            w, path = self._queue.popleft()
            count += 1
            self.watch_events += 1
            w.callback(path, w.token)
        return count

    run_watches = process

    # --- display ----------------------------------------------------------------------------

    def items(self, root: str = "/") -> list[tuple[str, str]]:
        """Every ``(path, value)`` at or below ``root``, in tree (depth-first, sorted) order."""
        root = self.canonical(root)
        if root not in self._nodes:
            raise XenStoreNoEntry(root)
        below = [p for p in self._nodes if _is_child(p, root)]
        # Sorting by path components gives pre-order: a parent, then its children by name.
        return [(p, self._nodes[p].value) for p in sorted(below, key=_split)]

    def format_tree(self, root: str = "/") -> str:
        """The store below ``root`` as ``xenstore-ls`` prints it: one indented line per node.

        Examples
        --------
        >>> xs = XenStore()
        >>> xs.write("/local/domain/0/name", "Domain-0")
        >>> print(xs.format_tree("/local"))
        domain = ""
         0 = ""
          name = "Domain-0"
        """
        root = self.canonical(root)
        lines = []
        base = len(_split(root))
        for path, value in self.items(root)[1:]:
            depth = len(_split(path)) - base - 1
            name = path.rsplit("/", 1)[1]
            lines.append(f'{" " * depth}{name} = "{value}"')
        return "\n".join(lines)
