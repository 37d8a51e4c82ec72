"""Grant tables: access, revocation, the peer's map checks, maptrack, read-only mappings, and
frames the granter does not own."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.xen.grant import (
    GNTTAB_NR_RESERVED_ENTRIES,
    MAPTRACK_HEAD_DTYPE,
    GNTST_bad_gntref,
    GNTST_bad_handle,
    GNTST_bad_page,
    GNTST_general_error,
    GNTST_no_device_space,
    GNTST_okay,
    GNTST_permission_denied,
    GTF_reading,
    GTF_writing,
    gnttab_end_foreign_access_ref,
    gnttab_query_foreign_access,
    grant_page_read,
    grant_page_write,
    new_maptrack,
    xen_domain,
)

BACK = 0


@pytest.fixture
def guest():
    dom = xen_domain(1, 16, 64)
    frame = dom.alloc_pages(1)
    dom.pages[frame] = np.arange(4096, dtype=np.uint32).astype(np.uint8)
    return dom, frame


def maptrack(n):
    head = np.zeros(1, MAPTRACK_HEAD_DTYPE)
    return new_maptrack(n, head[0]), head[0]


def test_claim_release_and_reserved_entries(guest):
    dom, _ = guest
    free = dom.stats()["free_count"]
    assert free == 64 - GNTTAB_NR_RESERVED_ENTRIES
    refs = [dom.gnttab_claim_grant_reference() for _ in range(free)]
    assert min(refs) >= GNTTAB_NR_RESERVED_ENTRIES and len(set(refs)) == free
    assert dom.gnttab_claim_grant_reference() == -1  # exhausted, no exception
    dom.gnttab_release_grant_reference(refs[3])
    assert dom.gnttab_claim_grant_reference() == refs[3]
    with pytest.raises(XbqError, match="exhausted"):
        dom.gnttab_alloc_grant_references(2)


def test_map_write_read_unmap_round_trip(guest):
    dom, frame = guest
    mt, head = maptrack(4)
    ref = dom.grant(BACK, frame)
    h = dom.map_grant_ref(ref, BACK, False, mt, head)
    assert h >= 0 and head["mt_nfree"] == 3
    assert dom.shared[ref]["flags"] & (GTF_reading | GTF_writing)
    assert not gnttab_end_foreign_access_ref(dom.shared, ref)  # still mapped: refused
    src = np.full(512, 0xAB, np.uint8)
    assert grant_page_write(dom.mem, mt, h, 1024, src, 0, 512) == GNTST_okay
    dst = np.zeros(512, np.uint8)
    assert grant_page_read(dom.mem, mt, h, 1024, dst, 0, 512) == GNTST_okay
    assert (dst == 0xAB).all() and (dom.pages[frame, 1024:1536] == 0xAB).all()
    assert dom.pages[frame, 1023] == (1023 & 0xFF)  # neighbours untouched
    assert dom.unmap_grant_ref(mt, head, h) == GNTST_okay
    assert not gnttab_query_foreign_access(dom.shared, ref)
    assert dom.unmap_grant_ref(mt, head, h) == GNTST_bad_handle  # double unmap
    assert gnttab_end_foreign_access_ref(dom.shared, ref)
    s = dom.stats()
    assert (s["map_ops"], s["unmap_ops"], head["mt_nfree"]) == (1, 1, 4)


def test_map_errors(guest):
    dom, frame = guest
    mt, head = maptrack(1)
    assert dom.map_grant_ref(10_000, BACK, False, mt, head) == GNTST_bad_gntref
    assert dom.map_grant_ref(-1, BACK, False, mt, head) == GNTST_bad_gntref
    never_granted = dom.gnttab_claim_grant_reference()
    assert dom.map_grant_ref(never_granted, BACK, False, mt, head) == GNTST_general_error
    other = dom.grant(7, frame)  # granted to another domain
    assert dom.map_grant_ref(other, BACK, False, mt, head) == GNTST_general_error
    ro = dom.grant(BACK, frame, readonly=True)
    assert dom.map_grant_ref(ro, BACK, False, mt, head) == GNTST_general_error  # write pin
    h = dom.map_grant_ref(ro, BACK, True, mt, head)
    assert h >= 0
    src = np.ones(8, np.uint8)
    assert grant_page_write(dom.mem, mt, h, 0, src, 0, 8) == GNTST_permission_denied
    assert dom.pages[frame, 0] == 0
    ok = dom.grant(BACK, frame)
    assert dom.map_grant_ref(ok, BACK, False, mt, head) == GNTST_no_device_space
    assert dom.stats()["map_errors"] == 6 and head["mt_nfree"] == 0


def test_two_mappings_keep_flags_until_last_unmap(guest):
    dom, frame = guest
    mt, head = maptrack(4)
    ref = dom.grant(BACK, frame)
    h1 = dom.map_grant_ref(ref, BACK, False, mt, head)
    h2 = dom.map_grant_ref(ref, BACK, True, mt, head)
    assert dom.active[ref]["pin"] == 2 and dom.active[ref]["pin_wr"] == 1
    assert dom.unmap_grant_ref(mt, head, h1) == GNTST_okay
    flags = int(dom.shared[ref]["flags"])
    assert flags & GTF_reading and not flags & GTF_writing
    assert dom.unmap_grant_ref(mt, head, h2) == GNTST_okay
    assert not gnttab_query_foreign_access(dom.shared, ref)


def test_alloc_pages_contiguous_and_bounded():
    dom = xen_domain(1, 8, 32)
    a, b = dom.alloc_pages(3), dom.alloc_pages(5)
    assert (a, b) == (0, 3)
    with pytest.raises(XbqError):
        dom.alloc_pages(1)


def test_map_refuses_a_frame_the_granter_does_not_own(guest):
    """A grant entry naming a page beyond the guest's memory: GNTST_bad_page, nothing mapped."""
    dom, frame = guest
    mt, head = maptrack(4)
    for bad in (dom.nr_pages, dom.nr_pages + 7, (1 << 31) + 3, (1 << 32) - 1):
        ref = dom.grant(BACK, frame)
        dom.shared[ref]["frame"] = bad
        assert dom.map_grant_ref(ref, BACK, False, mt, head) == GNTST_bad_page
        assert dom.shared[ref]["flags"] & (GTF_reading | GTF_writing) == 0
        assert dom.active[ref]["pin"] == 0 and head["mt_nfree"] == 4
        assert gnttab_end_foreign_access_ref(dom.shared, ref)  # nothing holds it


def test_copies_through_a_handle_check_the_frame_and_range(guest):
    """grant_page_read/write refuse a frame outside memory and a range past the page."""
    dom, frame = guest
    mt, head = maptrack(2)
    h = dom.map_grant_ref(dom.grant(BACK, frame), BACK, False, mt, head)
    buf = np.zeros(16, np.uint8)
    assert grant_page_read(dom.mem, mt, h, 4090, buf, 0, 16) == GNTST_general_error
    assert grant_page_write(dom.mem, mt, h, -1, buf, 0, 4) == GNTST_general_error
    assert grant_page_read(dom.mem, mt, 1, 0, buf, 0, 4) == GNTST_bad_handle  # free handle
    mt[h]["frame"] = dom.nr_pages + 3  # a corrupt maptrack entry still cannot reach past memory
    assert grant_page_read(dom.mem, mt, h, 0, buf, 0, 4) == GNTST_bad_page
    assert grant_page_write(dom.mem, mt, h, 0, buf, 0, 4) == GNTST_bad_page


def test_end_foreign_access_clears_exactly_what_it_read(guest):
    """End access swaps the flags with cmpxchg: the entry ends up invalid, once."""
    dom, frame = guest
    ref = dom.grant(BACK, frame, readonly=True)
    assert gnttab_end_foreign_access_ref(dom.shared, ref)
    assert dom.shared[ref]["flags"] == 0


def test_map_of_an_entry_the_guest_changes_under_it_fails():
    """Xen's _set_status_v1 swaps flags and domid with cmpxchg and gives up when the guest
    keeps changing the entry: another thread flipping the domid makes maps fail or succeed,
    never map a grant to the wrong domain."""
    import threading

    dom = xen_domain(1, 4, 32)
    frame = dom.alloc_pages(1)
    ref = dom.grant(BACK, frame)
    mt, head = maptrack(4096)
    stop = threading.Event()

    def flip():
        e = dom.shared[ref:ref + 1]
        while not stop.is_set():
            e["domid"] = 5
            e["domid"] = BACK

    th = threading.Thread(target=flip)
    th.start()
    try:
        results = [dom.map_grant_ref(ref, BACK, True, mt, head) for _ in range(2000)]
    finally:
        stop.set()
        th.join()
    assert all(r >= 0 or r == GNTST_general_error for r in results)
    ok = sum(r >= 0 for r in results)
    assert dom.active[ref]["pin"] == ok  # every mapping made is counted, no other
