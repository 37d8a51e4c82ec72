"""The in-memory XenStore: node semantics, permissions, transactions, watches, xenstore-ls."""

import errno

import pytest

from xbq.errors import XbqError
from xbq.xen.xenstore import (
    TransactionConflict,
    XenStore,
    XenStoreError,
    XenStoreNoEntry,
    XenStorePermission,
)


def test_write_creates_parents_and_read_returns_value():
    xs = XenStore()
    xs.write("/a/b/c", 7)
    assert xs.read("/a/b/c") == "7"
    assert xs.read("/a/b") == "" and xs.read("/a") == ""
    assert xs.directory("/") == ["a"]
    assert xs.directory("/a/b") == ["c"]


def test_missing_node_raises_enoent_unless_default():
    xs = XenStore()
    with pytest.raises(XenStoreNoEntry) as exc:
        xs.read("/no/such")
    assert exc.value.errno == errno.ENOENT and "/no/such" in str(exc.value)
    assert isinstance(exc.value, XbqError)
    assert xs.read("/no/such", "dflt") == "dflt"
    assert xs.read("/no/such", None) is None
    assert not xs.exists("/no/such")
    with pytest.raises(XenStoreNoEntry):
        xs.directory("/no")
    with pytest.raises(XenStoreNoEntry):
        xs.rm("/no")


def test_rm_removes_subtree_only():
    xs = XenStore()
    for p in ("/x/a/1", "/x/a/2", "/x/ab", "/x/b"):
        xs.write(p, "v")
    xs.rm("/x/a")
    assert xs.directory("/x") == ["ab", "b"]
    assert not xs.exists("/x/a/1")


def test_mkdir_and_relative_paths():
    xs = XenStore()
    xs.mkdir("/local/domain/3")
    assert xs.read("/local/domain/3") == ""
    with pytest.raises(XenStorePermission):  # dom0 owns it until the toolstack hands it over
        xs.write("device", "", domid=3)
    xs.set_perms("/local/domain/3", ["n3", "r0"])
    xs.write("device/vbd/1/state", "1", domid=3)
    assert xs.read("/local/domain/3/device/vbd/1/state") == "1"
    xs.mkdir("/local/domain/3")  # idempotent
    assert xs.read("/local/domain/3/device/vbd/1/state") == "1"


@pytest.mark.parametrize("bad", ["", "/a//b", "/a/", "/a b", "/a/b$"])
def test_invalid_paths_are_einval(bad):
    with pytest.raises(XenStoreError) as exc:
        XenStore().write(bad, "x")
    assert exc.value.errno == errno.EINVAL


def test_permissions_owner_read_grant_and_none():
    xs = XenStore()
    xs.mkdir("/fe")
    xs.set_perms("/fe", ["n1", "r0"])
    xs.mkdir("/be")
    xs.set_perms("/be", ["n0", "r1"])
    xs.write("/fe/k", "v", domid=1)  # owner writes
    assert xs.get_perms("/fe/k") == ["n1", "r0"]  # inherited, creator owns it
    assert xs.read("/be", domid=1) == ""  # granted read
    with pytest.raises(XenStorePermission):
        xs.write("/be/k", "v", domid=1)  # no write grant
    with pytest.raises(XenStorePermission):
        xs.read("/fe/k", domid=2)  # nobody else
    assert xs.read("/fe/k", domid=0) == "v"  # dom0 is privileged


def test_watch_fires_on_registration_and_for_descendants_in_fifo_order():
    xs = XenStore()
    seen = []
    xs.watch("/d", "tok", lambda path, token: seen.append((path, token)))
    xs.write("/d/a", "1")
    xs.write("/other", "x")  # not below /d
    xs.write("/d/b/c", "2")
    xs.write("/d", "3")
    assert seen == []  # queued, not delivered
    assert xs.pending_watch_events == 4
    assert xs.process() == 4
    assert seen == [("/d", "tok"), ("/d/a", "tok"), ("/d/b/c", "tok"), ("/d", "tok")]


def test_watch_on_prefix_sibling_does_not_fire():
    xs = XenStore()
    seen = []
    xs.watch("/d", "t", lambda p, t: seen.append(p))
    xs.process()
    xs.write("/dd/x", "1")
    xs.process()
    assert seen == ["/d"]


def test_rm_of_ancestor_fires_watch_below_it():
    xs = XenStore()
    xs.write("/a/b/c", "1")
    seen = []
    xs.watch("/a/b/c", "t", lambda p, t: seen.append(p))
    xs.process()
    xs.rm("/a")
    xs.process()
    assert seen == ["/a/b/c", "/a/b/c"]


def test_callbacks_queue_more_events_delivered_after_earlier_ones():
    xs = XenStore()
    order = []

    def first(path, token):
        order.append(("first", path))
        if path == "/p/go":
            xs.write("/q/reply", "1")

    xs.watch("/p", "1", first)
    xs.watch("/q", "2", lambda p, t: order.append(("second", p)))
    xs.write("/p/go", "1")
    xs.write("/p/later", "1")
    xs.process()
    assert order == [("first", "/p"), ("second", "/q"), ("first", "/p/go"),
                     ("first", "/p/later"), ("second", "/q/reply")]


def test_unwatch_drops_queued_events():
    xs = XenStore()
    seen = []
    xs.watch("/w", "t", lambda p, t: seen.append(p))
    xs.write("/w/x", "1")
    xs.unwatch("/w", "t")
    xs.write("/w/y", "1")
    assert xs.process() == 0 and seen == []


def test_transaction_commit_is_atomic_and_fires_at_commit():
    xs = XenStore()
    xs.write("/t/keep", "old")
    seen = []
    xs.watch("/t", "t", lambda p, t: seen.append(p))
    xs.process()
    seen.clear()
    t = xs.transaction_start()
    xs.write("/t/a", "1", t=t)
    xs.write("/t/keep", "new", t=t)
    assert xs.read("/t/a", t=t) == "1"
    assert not xs.exists("/t/a") and xs.read("/t/keep") == "old"  # invisible outside
    xs.process()
    assert seen == []
    xs.transaction_end(t)
    assert xs.read("/t/a") == "1" and xs.read("/t/keep") == "new"
    xs.process()
    assert seen == ["/t/a", "/t/keep"]


def test_transaction_abort_applies_nothing():
    xs = XenStore()
    t = xs.transaction_start()
    xs.write("/t/a", "1", t=t)
    xs.transaction_end(t, abort=True)
    assert not xs.exists("/t/a") and not xs.exists("/t")
    with pytest.raises(XenStoreError):
        xs.write("/t/b", "1", t=t)  # closed


def test_transaction_conflict_is_eagain_and_applies_nothing():
    xs = XenStore()
    xs.write("/c/n", "0")
    t = xs.transaction_start()
    assert xs.read("/c/n", t=t) == "0"
    xs.write("/c/other", "x", t=t)
    xs.write("/c/n", "1")  # someone else changes what t read
    with pytest.raises(TransactionConflict) as exc:
        xs.transaction_end(t)
    assert exc.value.errno == errno.EAGAIN
    assert not xs.exists("/c/other") and xs.read("/c/n") == "1"
    # untouched nodes changing do not conflict; a retry commits
    t = xs.transaction_start()
    xs.write("/c/other", "y", t=t)
    xs.write("/unrelated", "z")
    xs.transaction_end(t)
    assert xs.read("/c/other") == "y"


def test_format_tree_like_xenstore_ls():
    xs = XenStore()
    xs.write("/local/domain/0/name", "Domain-0")
    xs.write("/local/domain/1/device/vbd/51712/state", "4")
    xs.write("/local/domain/1/name", "guest")
    assert xs.format_tree("/local/domain") == "\n".join([
        '0 = ""',
        ' name = "Domain-0"',
        '1 = ""',
        ' device = ""',
        '  vbd = ""',
        '   51712 = ""',
        '    state = "4"',
        ' name = "guest"',
    ])
    assert xs.format_tree().splitlines()[0] == 'local = ""'


def test_process_guards_against_livelock():
    xs = XenStore()
    xs.watch("/loop", "t", lambda p, t: xs.write("/loop/x", "1"))
    with pytest.raises(XbqError, match="livelock"):
        xs.process(max_events=50)
