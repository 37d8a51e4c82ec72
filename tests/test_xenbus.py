"""The xenbus handshake: the negotiation matrix, refusals, ring set-up, and data end to end."""

import errno

import numpy as np
import pytest

from xbq.blkif.negotiate import Connection, negotiate
from xbq.errors import XbqError
from xbq.xen.abi import VDISK_READONLY, XenbusState
from xbq.xen.evtchn import EVTCHNSTAT_interdomain
from xbq.xen.grant import GTF_reading, GTF_writing
from xbq.xen.ring import REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD
from xbq.xen.xenbus import (
    xenbus_dev_fatal,
    xenbus_device,
    xenbus_gather,
    xenbus_read_otherend,
    xenbus_read_unsigned,
    xenbus_scanf,
    xenbus_switch_state,
)
from xbq.xen.xenstore import XenStore, XenStoreError, XenStoreNoEntry, XenStorePermission

S = XenbusState


def fe_keys(conn: Connection) -> dict[str, str]:
    """The frontend directory as {relative path: value}."""
    n = len(conn.frontend_path) + 1
    return {p[n:]: v for p, v in conn.store.items(conn.frontend_path)[1:]}


def be_keys(conn: Connection) -> dict[str, str]:
    n = len(conn.backend_path) + 1
    return {p[n:]: v for p, v in conn.store.items(conn.backend_path)[1:]}


def error_node(conn: Connection) -> str | None:
    return conn.store.read("/local/domain/0/error/backend/vbd/1/51712/error", None)


def assert_nothing_mapped(conn: Connection):
    mt = conn.maptrack
    assert int(conn.mt_head[0]["mt_nfree"]) == mt.size and (mt["readonly"] == -1).all()
    assert not conn.front.active["pin"].any()
    open_backend = (conn.evtchn["owner"] == conn.back.domid) & (conn.evtchn["state"] != 0)
    assert not open_backend.any()
    assert not (conn.evtchn["state"] == EVTCHNSTAT_interdomain).any()


def assert_refused(conn: Connection, *needles: str):
    assert not conn.connected
    assert conn.nr_rings == 0 and conn.rings == []
    assert conn.error is not None and conn.error.startswith("backend: ")
    for needle in needles:
        assert needle in conn.error
    node = error_node(conn)
    assert node is not None and conn.error[len("backend: "):] in node
    back = [s for side, s in conn.transitions if side == "back"]
    assert back[:3] == [S.Initialising, S.InitWait, S.Closing]
    assert S.Connected not in back
    assert_nothing_mapped(conn)


# --- the state walk -------------------------------------------------------------------------


def test_default_handshake_walks_both_sides_to_connected_in_order():
    conn = negotiate()
    assert conn.connected and conn.error is None
    assert conn.transitions == [
        ("back", S.Initialising), ("front", S.Initialising), ("back", S.InitWait),
        ("front", S.Initialised), ("back", S.Connected), ("front", S.Connected)]
    assert conn.front_state == conn.back_state == S.Connected
    assert conn.store.read(f"{conn.frontend_path}/state") == "4"
    assert conn.store.read(f"{conn.backend_path}/state") == "4"
    assert conn.nr_rings == 4 and conn.ring_page_order == 0 and conn.nr_ents == 32
    assert conn.front.domid == 1 and conn.back.domid == 0
    assert error_node(conn) is None


def test_handshake_is_deterministic():
    a, b = negotiate(vcpus=3, max_ring_page_order=2), negotiate(vcpus=3, max_ring_page_order=2)
    assert a.store.items() == b.store.items()
    assert a.transitions == b.transitions


def test_backend_probe_keys_and_connect_keys():
    conn = negotiate(dom0_vcpus=6, backend_max_ring_page_order=3, sectors=12345,
                     sector_size=4096)
    be = be_keys(conn)
    assert be["multi-queue-max-queues"] == "6"
    assert be["max-ring-page-order"] == "3"
    assert be["feature-max-indirect-segments"] == "256"
    for key in ("feature-flush-cache", "feature-barrier", "feature-discard",
                "feature-persistent"):
        assert be[key] == "1"
    assert be["sectors"] == "12345" and be["sector-size"] == "4096" and be["info"] == "0"
    assert conn.sectors == 12345 and conn.sector_size == 4096 and conn.info == 0
    assert conn.features["feature_flush_cache"] and conn.features["feature_barrier"]
    assert conn.features["feature_discard"]


def test_readonly_device_sets_vdisk_readonly():
    conn = negotiate(readonly=True)
    assert conn.connected and conn.info & VDISK_READONLY
    assert be_keys(conn)["mode"] == "r"


def test_frontend_cannot_write_the_backend_directory():
    conn = negotiate(vcpus=1)
    with pytest.raises(XenStorePermission):
        conn.store.write(f"{conn.backend_path}/state", "4", domid=conn.front.domid)
    assert conn.store.read(f"{conn.backend_path}/state", domid=conn.front.domid) == "4"


# --- how many queues ----------------------------------------------------------------------


def test_old_backend_gets_one_ring_with_top_level_keys():
    conn = negotiate(old_backend=True, vcpus=8, max_queues=8)
    assert conn.connected and conn.nr_rings == 1
    assert "multi-queue-max-queues" not in be_keys(conn)
    fe = fe_keys(conn)
    assert "multi-queue-num-queues" not in fe and "queue-0" not in fe
    assert fe["ring-ref"] == str(conn.rings[0].ring_refs[0])
    assert fe["event-channel"] == str(conn.rings[0].front_port)


def test_one_queue_uses_top_level_keys_like_a_single_queue_frontend():
    conn = negotiate(max_queues=1)
    fe = fe_keys(conn)
    assert conn.connected and conn.nr_rings == 1
    assert {"ring-ref", "event-channel", "protocol", "feature-persistent"} <= fe.keys()
    assert not any(k.startswith("queue-") for k in fe)
    assert "multi-queue-num-queues" not in fe and "ring-page-order" not in fe
    assert fe["protocol"] == "x86_64-abi"


@pytest.mark.parametrize("queues", [2, 5, 16])
def test_many_queues_use_queue_directories_and_no_top_level_ring_keys(queues):
    conn = negotiate(vcpus=16, max_queues=queues)
    fe = fe_keys(conn)
    assert conn.connected and conn.nr_rings == queues
    assert fe["multi-queue-num-queues"] == str(queues)
    assert "ring-ref" not in fe and "event-channel" not in fe
    for ring in conn.rings:
        assert fe[f"queue-{ring.index}/ring-ref"] == str(ring.ring_refs[0])
        assert fe[f"queue-{ring.index}/event-channel"] == str(ring.front_port)
    assert f"queue-{queues}" not in fe
    assert [r.index for r in conn.rings] == list(range(queues))


@pytest.mark.parametrize("kw, expected", [
    (dict(vcpus=2, max_queues=4), 2),  # the vCPU cap
    (dict(vcpus=16, max_queues=4, backend_max_queues=3), 3),  # the backend maximum
    (dict(vcpus=16, max_queues=8, dom0_vcpus=2), 2),  # backend default = dom0 vCPUs
    (dict(vcpus=16, max_queues=8, backend_max_queues=0, dom0_vcpus=5), 5),  # 0 = default
    (dict(vcpus=1, max_queues=4), 1),
    (dict(vcpus=4, max_queues=0), 1),  # min(...) = 0 -> at least one ring
])
def test_queue_count_caps(kw, expected):
    conn = negotiate(**kw)
    assert conn.connected and conn.nr_rings == expected


def test_backend_refuses_zero_queues():
    conn = negotiate(frontend_num_queues=0)
    assert_refused(conn, "guest requested 0 queues", "maximum of 16")
    # Linux passes xenbus_scanf's return value (1) as the error, so the node reads "-1 ..."
    assert error_node(conn).startswith("-1 guest requested 0 queues")
    # The frontend follows the backend to Closed, and so does the backend (it stays online).
    assert conn.transitions[-2:] == [("front", S.Closed), ("back", S.Closed)]
    assert conn.front_state == conn.back_state == S.Closed


def test_backend_refuses_more_queues_than_its_maximum():
    conn = negotiate(frontend_num_queues=5, backend_max_queues=4)
    assert_refused(conn, "guest requested 5 queues, exceeding the maximum of 4")
    assert fe_keys(conn)["multi-queue-num-queues"] == "5"


def test_forced_queue_count_within_the_maximum_connects():
    conn = negotiate(frontend_num_queues=3, vcpus=1, max_queues=1)
    assert conn.connected and conn.nr_rings == 3


# --- ring pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("queues", [1, 3])
def test_multi_page_rings(order, queues):
    conn = negotiate(max_ring_page_order=order, max_queues=queues)
    assert conn.connected and conn.ring_page_order == order
    assert conn.nr_ents == 32 << order  # 64, 128, 256, 512
    fe = fe_keys(conn)
    assert fe["ring-page-order"] == str(order)
    for ring in conn.rings:
        prefix = "" if queues == 1 else f"queue-{ring.index}/"
        assert len(ring.ring_refs) == 1 << order
        assert [fe[f"{prefix}ring-ref{j}"] for j in range(1 << order)] == \
            [str(r) for r in ring.ring_refs]
        assert f"{prefix}ring-ref" not in fe and f"{prefix}ring-ref{1 << order}" not in fe
        assert ring.sring.size == 4096 << order


def test_one_page_ring_writes_no_ring_page_order():
    conn = negotiate(max_ring_page_order=0, max_queues=1)
    assert "ring-page-order" not in fe_keys(conn) and "ring-ref0" not in fe_keys(conn)


@pytest.mark.parametrize("front, back, expected", [(4, 2, 2), (1, 4, 1), (7, 4, 4), (3, 9, 3)])
def test_ring_order_is_the_smaller_maximum_after_clamping(front, back, expected):
    conn = negotiate(max_ring_page_order=front, backend_max_ring_page_order=back)
    assert conn.connected and conn.ring_page_order == expected
    assert be_keys(conn)["max-ring-page-order"] == str(min(back, 4))


def test_backend_refuses_ring_order_above_its_maximum():
    conn = negotiate(frontend_ring_page_order=3, backend_max_ring_page_order=2, max_queues=2)
    assert_refused(conn, "request 3 ring page order exceed max:2")
    assert conn.ring_page_order == 3


def test_ring_pages_are_contiguous_initialised_and_granted_to_the_backend():
    order = 2
    conn = negotiate(max_ring_page_order=order, max_queues=4)
    npages = 1 << order
    first = conn.rings[0].first_frame
    shared = conn.front.shared
    for k, ring in enumerate(conn.rings):
        assert ring.first_frame == first + k * npages
        assert np.shares_memory(ring.sring, conn.front.pages[ring.first_frame])
        assert ring.sring.ctypes.data == conn.front.pages[ring.first_frame].ctypes.data
        hdr = ring.sring[:16].view(np.uint32)
        assert (hdr[REQ_PROD], hdr[RSP_PROD], hdr[REQ_EVENT], hdr[RSP_EVENT]) == (0, 0, 1, 1)
        for j, ref in enumerate(ring.ring_refs):
            assert shared[ref]["frame"] == ring.first_frame + j
            assert shared[ref]["domid"] == conn.back.domid
            assert shared[ref]["flags"] & (GTF_reading | GTF_writing)  # mapped r/w
        assert [int(conn.maptrack["ref"][h]) for h in ring.back_handles] == ring.ring_refs
        assert [int(conn.maptrack["frame"][h]) for h in ring.back_handles] == \
            list(range(ring.first_frame, ring.first_frame + npages))


def test_event_channels_are_bound_pairwise():
    conn = negotiate(max_queues=4)
    ev = conn.evtchn
    ports = set()
    for ring in conn.rings:
        f, b = ring.front_slot, ring.back_slot
        assert ev[f]["state"] == ev[b]["state"] == EVTCHNSTAT_interdomain
        assert ev[f]["remote"] == b and ev[b]["remote"] == f
        assert ev[f]["owner"] == conn.front.domid and ev[b]["owner"] == conn.back.domid
        # each domain numbers its own ports, from 1 (Xen reserves port 0)
        assert (ev[f]["port"], ev[b]["port"]) == (ring.front_port, ring.back_port)
        ports |= {f, b}
    assert len(ports) == 2 * conn.nr_rings
    assert sorted(r.front_port for r in conn.rings) == list(range(1, conn.nr_rings + 1))
    assert sorted(r.back_port for r in conn.rings) == list(range(1, conn.nr_rings + 1))


def test_a_guest_that_takes_every_port_exhausts_only_its_own():
    """A guest that allocates all of its event-channel ports leaves dom0's alone: its own
    rings cannot get one, and blkfront fails its set-up in the store (error node, no
    exception out of the handshake)."""
    from xbq.xen.evtchn import EvtchnError, evtchn_alloc_unbound, new_evtchn_table

    ev = new_evtchn_table(8, domains=(0, 1))
    while True:
        try:
            evtchn_alloc_unbound(ev, 1, 0)
        except EvtchnError as exc:
            assert exc.errno == errno.ENOSPC
            break
    assert evtchn_alloc_unbound(ev, 0, 1) >= 0  # dom0 still has ports
    conn = negotiate(max_queues=2, evtchn=new_evtchn_table(8, domains=(0, 1)))
    assert conn.connected  # the table is big enough for two rings each
    full = new_evtchn_table(8, domains=(0, 1))
    for _ in range(7):
        evtchn_alloc_unbound(full, 1, 0)
    conn = negotiate(max_queues=2, evtchn=full)
    assert not conn.connected and "event channel" in (conn.error or "")


def test_backend_without_a_free_port_refuses_the_ring():
    """dom0 out of ports: blkback's bind fails with ENOSPC, and it refuses the frontend as for
    any other failure to connect (error node, Closing), nothing left mapped or bound."""
    from xbq.xen.evtchn import evtchn_alloc_unbound, new_evtchn_table

    full = new_evtchn_table(8, domains=(0, 1))
    for _ in range(7):
        evtchn_alloc_unbound(full, 0, 5)  # dom0's ports, offered to someone else
    conn = negotiate(max_queues=2, evtchn=full)
    assert not conn.connected and conn.back_state in (XenbusState.Closing, XenbusState.Closed)
    assert str(errno.ENOSPC) in error_node(conn) and "mapping ring-ref" in error_node(conn)


# --- missing keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("kw, omit, needle", [
    (dict(max_queues=1), "event-channel", "51712/event-channel"),
    (dict(max_queues=1), "ring-ref", "51712/ring-ref"),
    (dict(max_queues=1, max_ring_page_order=2), "ring-ref2", "51712/ring-ref2"),
    (dict(max_queues=2), "queue-1/event-channel", "queue-1/event-channel"),
    (dict(max_queues=3), "queue-2/ring-ref", "queue-2/ring-ref"),
    (dict(max_queues=3), "event-channel", "queue-0/event-channel"),  # bare name: every queue
    # Without multi-queue-num-queues the backend assumes one ring at the top level.
    (dict(max_queues=4), "multi-queue-num-queues", "51712/event-channel"),
    (dict(max_queues=2, max_ring_page_order=1), "ring-page-order", "queue-0/ring-ref"),
    (dict(), "protocol", "protocol"),
])
def test_missing_keys_are_refused_naming_the_key(kw, omit, needle):
    conn = negotiate(omit_keys=(omit,), **kw)
    assert_refused(conn, needle)


def test_missing_second_queue_unmaps_the_first():
    conn = negotiate(max_queues=2, omit_keys=["queue-1/ring-ref"])
    assert_refused(conn, "queue-1/ring-ref")
    assert conn.front.stats()["map_ops"] == 1 and conn.front.stats()["unmap_ops"] == 1


def test_missing_feature_persistent_means_no_persistent_grants():
    conn = negotiate(omit_keys=["feature-persistent"])
    assert conn.connected and conn.features["feature_persistent"] is False


def test_a_second_initwait_event_does_not_set_the_rings_up_again():
    conn = negotiate(max_queues=2)
    free = conn.front.stats()["free_count"]  # rings set up again would claim references
    conn.store.write(f"{conn.backend_path}/state", "2")  # a stale/double InitWait event
    conn.store.process()
    assert conn.store.read(f"{conn.frontend_path}/state") == "4"
    assert conn.front.stats()["free_count"] == free


def _close_and_reconnect(conn, bogus: dict):
    """The frontend closes, rewrites some keys, and comes back (Initialising, Initialised)."""
    fe, xs, guest = conn.frontend_path, conn.store, conn.front.domid
    xs.write(f"{fe}/state", "6", domid=guest)
    xs.process()
    assert xs.read(f"{conn.backend_path}/state") == "6"  # blkback followed to Closed
    assert_nothing_mapped(conn)
    for key, value in bogus.items():
        xs.write(f"{fe}/{key}", value, domid=guest)
    xs.write(f"{fe}/state", "1", domid=guest)
    xs.process()
    assert xs.read(f"{conn.backend_path}/state") == "2"  # "prepare for reconnect"
    xs.write(f"{fe}/state", "3", domid=guest)
    xs.process()


def test_reconnect_with_a_bad_grant_in_the_second_queue_unmaps_the_first():
    conn = negotiate(max_queues=2)
    _close_and_reconnect(conn, {"queue-1/ring-ref": "7"})  # 7: never granted
    node = error_node(conn)
    assert node == "2 mapping ring-ref port 2"  # after "mapping in shared page 7 ..."
    assert conn.store.read(f"{conn.backend_path}/state") == "5"
    assert conn.front.stats()["map_errors"] == 1
    assert_nothing_mapped(conn)


def test_a_bad_grant_in_a_multi_page_ring_unmaps_the_pages_already_mapped():
    conn = negotiate(max_queues=1, max_ring_page_order=2)
    _close_and_reconnect(conn, {"ring-ref2": "7"})
    assert conn.front.stats()["map_errors"] == 1
    assert_nothing_mapped(conn)


def test_reconnect_with_good_keys_connects_again():
    conn = negotiate(max_queues=2)
    _close_and_reconnect(conn, {})
    assert conn.store.read(f"{conn.backend_path}/state") == "4"
    assert int(conn.mt_head[0]["mt_nfree"]) == conn.maptrack.size - 2


# --- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize("front, back", [(True, True), (True, False), (False, True),
                                         (False, False)])
def test_persistent_grants_only_when_both_sides_offer_them(front, back):
    conn = negotiate(feature_persistent=front, backend_feature_persistent=back)
    assert conn.connected
    assert conn.features["feature_persistent"] is (front and back)
    assert fe_keys(conn)["feature-persistent"] == str(int(front))
    assert be_keys(conn)["feature-persistent"] == str(int(back))


@pytest.mark.parametrize("backend, expected", [(256, 32), (16, 16), (12, 12), (11, 0), (8, 0),
                                               (0, 0), (None, 0)])
def test_indirect_segments(backend, expected):
    conn = negotiate(backend_max_indirect_segments=backend)
    assert conn.connected and conn.features["max_indirect_segments"] == expected
    assert ("feature-max-indirect-segments" in be_keys(conn)) is (backend is not None)


@pytest.mark.parametrize("front, expected", [(32, 32), (64, 64), (300, 256), (12, 12),
                                             (8, 0), (0, 0)])
def test_frontend_max_indirect_segments_parameter(front, expected):
    conn = negotiate(max_indirect_segments=front, backend_max_indirect_segments=256)
    assert conn.connected and conn.features["max_indirect_segments"] == expected


def test_device_without_cache_or_discard():
    conn = negotiate(backend_flush=False, backend_discard=False)
    f = conn.features
    assert not (f["feature_flush_cache"] or f["feature_barrier"] or f["feature_discard"])
    assert be_keys(conn)["feature-discard"] == "0"


# --- xenbus helpers and parameter checks ------------------------------------------------------


def test_xenbus_readers():
    conn = negotiate(vcpus=1)
    xs = conn.store
    log = []
    dev = xenbus_device(xs, conn.frontend_path, 1, "front", log,
                        otherend=conn.backend_path, otherend_id=0)
    assert xenbus_read_otherend(dev, "sector-size") == "512"
    assert xenbus_read_otherend(dev, "nope", None) is None
    assert xenbus_read_unsigned(dev, conn.backend_path, "nope", 7) == 7
    assert xenbus_read_unsigned(dev, conn.backend_path, "mode", 7) == 7  # "w" does not parse
    assert xenbus_gather(dev, None, conn.backend_path, ("sectors", int), ("info", int)) == \
        (2**21, 0)
    with pytest.raises(XenStoreNoEntry):
        xenbus_gather(dev, None, conn.backend_path, ("sectors", int), ("nope", int))
    with pytest.raises(XenStoreError):
        xenbus_scanf(dev, None, conn.backend_path, "mode", int)


def test_xenbus_dev_fatal_writes_error_node_and_closes():
    xs = XenStore()
    xs.write("/local/domain/0/backend/vbd/1/7/state", "2")
    log = []
    dev = xenbus_device(xs, "/local/domain/0/backend/vbd/1/7", 0, "back", log,
                        state=S.InitWait)
    xenbus_switch_state(dev, S.InitWait)  # unchanged: nothing written
    assert log == []
    xenbus_dev_fatal(dev, -22, "reading something")
    assert xs.read("/local/domain/0/error/backend/vbd/1/7/error") == "22 reading something"
    assert dev.state == S.Closing and xs.read("/local/domain/0/backend/vbd/1/7/state") == "5"
    assert log == [("back", S.Closing)] and dev.errors == ["reading something"]


@pytest.mark.parametrize("kw", [
    dict(vcpus=0), dict(dom0_vcpus=0), dict(max_queues=-1), dict(max_ring_page_order=-1),
    dict(sectors=0), dict(sector_size=1000), dict(frontend_ring_page_order=9),
    dict(frontend_num_queues=-1), dict(omit_keys=["bogus"]), dict(vcpus=2.5),
])
def test_bad_parameters_are_one_line_errors(kw):
    with pytest.raises(XbqError) as exc:
        negotiate(**kw)
    assert "\n" not in str(exc.value)


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    dict(vcpus=2, sectors=1 << 16),
    dict(max_queues=1, max_ring_page_order=2, feature_persistent=False,
         backend_max_indirect_segments=0, sectors=1 << 16),
])
def test_data_through_negotiated_rings_reads_back_bit_identical(kw):
    from xbq.blkif.blkback import new_blkback
    from xbq.blkif.blkfront import new_blkfront
    from xbq.blkif.vbd import new_vbd
    from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE

    conn = negotiate(**kw)
    assert conn.connected
    fi = new_blkfront(conn)
    be = new_blkback(conn, new_vbd("ramdisk", conn.sectors))
    npages = 16  # 64 KiB
    src, dst = conn.front.alloc_pages(npages), conn.front.alloc_pages(npages)
    rng = np.random.default_rng(2)
    conn.front.pages[src:src + npages] = rng.integers(0, 256, (npages, 4096), dtype=np.uint8)
    limit = fi.max_sectors
    r = conn.nr_rings - 1  # the last ring

    def io(op, pfn, sector, nsect, tag):
        while nsect > 0:
            n = min(nsect, limit)
            assert fi.queue_request(r, op, sector, n, pfn, tag) >= 0
            fi.flush_requests(r)
            assert be.do_block_io_op(r) == 0
            k, tags, statuses = fi.interrupt(r)
            assert k == 1 and statuses[0] == 0 and tags[0] == tag
            sector, pfn, nsect = sector + n, pfn + n // 8, nsect - n

    io(BLKIF_OP_WRITE, src, 1000, npages * 8, 7)
    io(BLKIF_OP_READ, dst, 1000, npages * 8, 8)
    assert np.array_equal(conn.front.pages[src:src + npages], conn.front.pages[dst:dst + npages])
    assert not np.array_equal(conn.front.pages[dst], np.zeros(4096, np.uint8))


# --- garbage in the frontend's keys (issue: XenStore garbage) ---------------------------------

GARBAGE = ["abc", "", "12abc", "-1", "+7", "0x10", "1e3", "4294967296", "18446744073709551616",
           "99999999999999999999999999", "\u0661\u0662"]


@pytest.mark.parametrize("value", GARBAGE)
@pytest.mark.parametrize("key", ["ring-ref", "event-channel"])
def test_garbage_ring_ref_or_event_channel_is_refused(key, value):
    """A non-numeric, signed, oversized (>= 2**32, >= 2**64) or non-ASCII number: the backend
    refuses as blkback does (error node, Closing), never an exception, nothing left mapped."""
    conn = negotiate(max_queues=1)
    _close_and_reconnect(conn, {key: value})
    assert conn.store.read(f"{conn.backend_path}/state") == str(int(S.Closing))
    assert error_node(conn) is not None
    assert_nothing_mapped(conn)


@pytest.mark.parametrize("value", GARBAGE)
def test_garbage_in_a_second_queue_is_refused(value):
    conn = negotiate(max_queues=2)
    _close_and_reconnect(conn, {"queue-1/ring-ref": value})
    assert conn.store.read(f"{conn.backend_path}/state") == str(int(S.Closing))
    assert_nothing_mapped(conn)


@pytest.mark.parametrize("value", ["-1", "-100", "abc", "5", "99", "18446744073709551617"])
def test_bad_ring_page_order_is_refused(value):
    conn = negotiate(max_queues=1, max_ring_page_order=2)
    _close_and_reconnect(conn, {"ring-page-order": value})
    assert conn.store.read(f"{conn.backend_path}/state") == str(int(S.Closing))
    assert "ring-page-order" in error_node(conn) or "ring page order" in error_node(conn)
    assert_nothing_mapped(conn)


@pytest.mark.parametrize("value", ["bogus", "", "x86_64-abi ", "X86_64-ABI", "x86_32-abi",
                                   "arm-abi\x00"])
def test_bogus_protocol_is_refused(value):
    conn = negotiate(max_queues=1)
    _close_and_reconnect(conn, {"protocol": value})
    assert conn.store.read(f"{conn.backend_path}/state") == str(int(S.Closing))
    assert "protocol" in error_node(conn)
    assert_nothing_mapped(conn)


@pytest.mark.parametrize("value", ["0", "17", "-3", "18446744073709551616"])
def test_bad_queue_count_is_refused(value):
    conn = negotiate(max_queues=2)
    _close_and_reconnect(conn, {"multi-queue-num-queues": value})
    assert conn.store.read(f"{conn.backend_path}/state") == str(int(S.Closing))
    assert_nothing_mapped(conn)
