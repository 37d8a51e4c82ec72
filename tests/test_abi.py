"""The blkif ABI: every offset and size against the x86_64 layout of blkif.h / ring.h."""

import numpy as np
import pytest

from xbq.xen import abi


@pytest.mark.parametrize("field, offset", [
    ("operation", 0), ("nr_segments", 1), ("handle", 2), ("id", 8), ("sector_number", 16),
    ("seg", 24)])
def test_request_offsets(field, offset):
    assert abi.REQUEST_DTYPE.fields[field][1] == offset


def test_request_and_segment_sizes():
    assert abi.REQUEST_DTYPE.itemsize == 112
    assert abi.SEGMENT_DTYPE.itemsize == 8
    seg = abi.SEGMENT_DTYPE.fields
    assert [seg[f][1] for f in ("gref", "first_sect", "last_sect")] == [0, 4, 5]
    assert abi.REQUEST_DTYPE.fields["seg"][0].shape == (abi.BLKIF_MAX_SEGMENTS_PER_REQUEST,)
    # seg[10] ends exactly at the end of the request
    assert 24 + 11 * 8 == abi.REQUEST_DTYPE.itemsize


def test_indirect_and_discard_layouts():
    ind = abi.REQUEST_INDIRECT_DTYPE.fields
    names = ("operation", "indirect_op", "nr_segments", "id", "sector_number", "handle",
             "indirect_grefs")
    assert [ind[f][1] for f in names] == [0, 1, 2, 8, 16, 24, 28]
    assert ind["nr_segments"][0] == np.dtype("<u2")
    assert abi.SIZEOF_REQUEST_INDIRECT == 28 + 8 * 4 + 4
    disc = abi.REQUEST_DISCARD_DTYPE.fields
    names = ("operation", "flag", "id", "sector_number", "nr_sectors")
    assert [disc[f][1] for f in names] == [0, 1, 8, 16, 24]


def test_x86_32_request_layout():
    d = abi.REQUEST_X86_32_DTYPE
    assert d.itemsize == 108 and d.fields["id"][1] == 4 and d.fields["seg"][1] == 20


def test_response_layout():
    r = abi.RESPONSE_DTYPE
    assert r.itemsize == 16
    assert [r.fields[f][1] for f in ("id", "operation", "status")] == [0, 8, 10]
    assert r.fields["status"][0] == np.dtype("<i2")


def test_sring_header():
    h = abi.SRING_HEADER_DTYPE
    names = ("req_prod", "req_event", "rsp_prod", "rsp_event")
    assert [h.fields[f][1] for f in names] == [0, 4, 8, 12]
    assert h.itemsize == abi.SRING_RING_OFFSET == 64
    assert abi.BLKIF_RING_ENTRY_SIZE == 112


@pytest.mark.parametrize("order, size", [(0, 32), (1, 64), (2, 128), (3, 256), (4, 512)])
def test_ring_size(order, size):
    assert abi.ring_size(order) == size
    # the formula, not a table: raw slots rounded down to a power of two
    raw = (4096 * 2**order - 64) // 112
    assert size <= raw < 2 * size
    assert abi.ring_size(order, abi.BLKIF_RING_ENTRY_SIZE_X86_32) == size


@pytest.mark.parametrize("order", [-1, 5])
def test_ring_size_rejects_bad_order(order):
    with pytest.raises(ValueError):
        abi.ring_size(order)


def test_constants():
    ops = (abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE, abi.BLKIF_OP_WRITE_BARRIER,
           abi.BLKIF_OP_FLUSH_DISKCACHE, abi.BLKIF_OP_DISCARD, abi.BLKIF_OP_INDIRECT)
    assert ops == (0, 1, 2, 3, 5, 6)
    assert (abi.BLKIF_RSP_OKAY, abi.BLKIF_RSP_ERROR, abi.BLKIF_RSP_EOPNOTSUPP) == (0, -1, -2)
    assert abi.SEGS_PER_INDIRECT_FRAME == 512 and abi.MAX_INDIRECT_PAGES == 1
    assert abi.XENBUS_MAX_RING_GRANTS == 16
    assert int(abi.XenbusStateConnected) == 4 and abi.XenbusState(6).name == "Closed"


def test_grant_entry_layout():
    g = abi.GRANT_ENTRY_V1_DTYPE
    assert g.itemsize == 8 and [g.fields[f][1] for f in ("flags", "domid", "frame")] == [0, 2, 4]
