"""Grant tables: access, revocation, the peer's map checks, maptrack, read-only mappings."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.grant import (
    GNTTAB_NR_RESERVED_ENTRIES,
    GNTST_bad_gntref,
    GNTST_bad_handle,
    GNTST_general_error,
    GNTST_no_device_space,
    GNTST_okay,
    GNTST_permission_denied,
    GTF_reading,
    GTF_writing,
    gnttab_alloc_grant_references,
    gnttab_claim_grant_reference,
    gnttab_end_foreign_access_ref,
    gnttab_map_grant_ref,
    gnttab_query_foreign_access,
    gnttab_release_grant_reference,
    gnttab_unmap_grant_ref,
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


def test_claim_release_and_reserved_entries(guest):
    dom, _ = guest
    gt = dom.gnttab
    free = dom.stats()["free_count"]
    assert free == 64 - GNTTAB_NR_RESERVED_ENTRIES
    refs = [gnttab_claim_grant_reference(gt) for _ in range(free)]
    assert min(refs) >= GNTTAB_NR_RESERVED_ENTRIES and len(set(refs)) == free
    assert gnttab_claim_grant_reference(gt) == -1  # exhausted, no exception
    gnttab_release_grant_reference(gt, refs[3])
    assert gnttab_claim_grant_reference(gt) == refs[3]
    with pytest.raises(XbqError, match="exhausted"):
        gnttab_alloc_grant_references(gt, 2)


def test_map_write_read_unmap_round_trip(guest):
    dom, frame = guest
    mt = new_maptrack(4)
    ref = dom.grant(BACK, frame)
    h = gnttab_map_grant_ref(dom.gnttab, ref, BACK, False, mt)
    assert h >= 0
    assert dom.gnttab.shared[ref]["flags"] & (GTF_reading | GTF_writing)
    assert not gnttab_end_foreign_access_ref(dom.gnttab, ref)  # still mapped: refused
    src = np.full(512, 0xAB, np.uint8)
    assert grant_page_write(dom.pages, mt, h, 1024, src, 0, 512) == GNTST_okay
    dst = np.zeros(512, np.uint8)
    grant_page_read(dom.pages, mt, h, 1024, dst, 0, 512)
    assert (dst == 0xAB).all() and (dom.pages[frame, 1024:1536] == 0xAB).all()
    assert dom.pages[frame, 1023] == (1023 & 0xFF)  # neighbours untouched
    assert gnttab_unmap_grant_ref(dom.gnttab, mt, h) == GNTST_okay
    assert not gnttab_query_foreign_access(dom.gnttab, ref)
    assert gnttab_unmap_grant_ref(dom.gnttab, mt, h) == GNTST_bad_handle  # double unmap
    assert gnttab_end_foreign_access_ref(dom.gnttab, ref)
    s = dom.stats()
    assert (s["map_ops"], s["unmap_ops"], s["ends"]) == (1, 1, 1)


def test_map_errors(guest):
    dom, frame = guest
    mt = new_maptrack(1)
    gt = dom.gnttab
    assert gnttab_map_grant_ref(gt, 10_000, BACK, False, mt) == GNTST_bad_gntref
    assert gnttab_map_grant_ref(gt, -1, BACK, False, mt) == GNTST_bad_gntref
    never_granted = gnttab_claim_grant_reference(gt)
    assert gnttab_map_grant_ref(gt, never_granted, BACK, False, mt) == GNTST_general_error
    other = dom.grant(7, frame)  # granted to another domain
    assert gnttab_map_grant_ref(gt, other, BACK, False, mt) == GNTST_general_error
    ro = dom.grant(BACK, frame, readonly=True)
    assert gnttab_map_grant_ref(gt, ro, BACK, False, mt) == GNTST_general_error  # write pin
    h = gnttab_map_grant_ref(gt, ro, BACK, True, mt)
    assert h >= 0
    src = np.ones(8, np.uint8)
    assert grant_page_write(dom.pages, mt, h, 0, src, 0, 8) == GNTST_permission_denied
    assert dom.pages[frame, 0] == 0
    ok = dom.grant(BACK, frame)
    assert gnttab_map_grant_ref(gt, ok, BACK, False, mt) == GNTST_no_device_space
    assert dom.stats()["map_errors"] == 6 and mt.nfree[0] == 0


def test_two_mappings_keep_flags_until_last_unmap(guest):
    dom, frame = guest
    mt = new_maptrack(4)
    ref = dom.grant(BACK, frame)
    h1 = gnttab_map_grant_ref(dom.gnttab, ref, BACK, False, mt)
    h2 = gnttab_map_grant_ref(dom.gnttab, ref, BACK, True, mt)
    assert gnttab_unmap_grant_ref(dom.gnttab, mt, h1) == GNTST_okay
    flags = int(dom.gnttab.shared[ref]["flags"])
    assert flags & GTF_reading and not flags & GTF_writing
    assert gnttab_unmap_grant_ref(dom.gnttab, mt, h2) == GNTST_okay
    assert not gnttab_query_foreign_access(dom.gnttab, ref)


def test_alloc_pages_contiguous_and_bounded():
    dom = xen_domain(1, 8, 32)
    a, b = dom.alloc_pages(3), dom.alloc_pages(5)
    assert (a, b) == (0, 3)
    with pytest.raises(XbqError):
        dom.alloc_pages(1)


def test_map_refuses_a_frame_the_granter_does_not_own(guest):
    """A grant entry naming a page beyond the guest's memory: GNTST_bad_page, nothing mapped."""
    from xbq.grant import GNTST_bad_page

    dom, frame = guest
    mt = new_maptrack(4)
    for bad in (dom.nr_pages, dom.nr_pages + 7, (1 << 31) + 3, (1 << 32) - 1):
        ref = dom.grant(BACK, frame)
        dom.gnttab.shared[ref]["frame"] = bad
        assert gnttab_map_grant_ref(dom.gnttab, ref, BACK, False, mt) == GNTST_bad_page
        assert dom.gnttab.shared[ref]["flags"] & (GTF_reading | GTF_writing) == 0
        assert dom.gnttab.pin[ref] == 0 and int(mt.nfree[0]) == 4
        assert gnttab_end_foreign_access_ref(dom.gnttab, ref)  # nothing holds it


def test_copies_through_a_handle_check_the_frame_and_range(guest):
    """grant_page_read/write refuse a frame outside the page array and a range past the page."""
    from xbq.grant import GNTST_bad_handle, GNTST_bad_page

    dom, frame = guest
    mt = new_maptrack(2)
    h = gnttab_map_grant_ref(dom.gnttab, dom.grant(BACK, frame), BACK, False, mt)
    buf = np.zeros(16, np.uint8)
    assert grant_page_read(dom.pages, mt, h, 4090, buf, 0, 16) == GNTST_general_error
    assert grant_page_write(dom.pages, mt, h, -1, buf, 0, 4) == GNTST_general_error
    assert grant_page_read(dom.pages, mt, 1, 0, buf, 0, 4) == GNTST_bad_handle  # free handle
    mt.frame[h] = dom.nr_pages + 3  # a corrupt maptrack entry still cannot reach past memory
    assert grant_page_read(dom.pages, mt, h, 0, buf, 0, 4) == GNTST_bad_page
    assert grant_page_write(dom.pages, mt, h, 0, buf, 0, 4) == GNTST_bad_page


def test_end_foreign_access_leaves_other_flag_bits_to_the_exchange(guest):
    """End access swaps the flags with cmpxchg: it clears exactly what it read, once."""
    dom, frame = guest
    ref = dom.grant(BACK, frame, readonly=True)
    assert gnttab_end_foreign_access_ref(dom.gnttab, ref)
    assert dom.gnttab.shared[ref]["flags"] == 0
    assert dom.stats()["ends"] == 1
