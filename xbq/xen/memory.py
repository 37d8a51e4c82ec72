"""Guest memory and byte-level access to it: typed loads, stores and copies at byte offsets.

A domain's memory is one flat ``uint8`` array, page aligned, of ``nr_pages * 4096`` bytes
(:func:`new_memory`): guest frame ``pfn`` is bytes ``pfn << 12`` to ``(pfn + 1) << 12``, and
every protocol structure that lives in guest memory (the shared rings, the granted data
pages, indirect descriptor pages) is read and written there at byte offsets, with the ABI's
little-endian layout (:mod:`xbq.xen.abi`). ``mem.reshape(-1, 4096)`` is the same memory as
pages, for Python.

``buf.view(np.uint32)[off >> 2]`` is the obvious way to read a field in numba, but every
``view`` re-derives the array's shape and strides. These intrinsics compute the address once
and emit a single load or store (or LLVM's ``memcpy``); the ``get_*``/``put_*`` wrappers
check the range first, with or without ``NUMBA_BOUNDSCHECK``, since offsets come from ring
indices and request fields.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from xbq._jit import kernel
from xbq.xen.abi import XEN_PAGE_SHIFT, XEN_PAGE_SIZE

MASK32 = 0xFFFFFFFF
_TYPES = {(16, False): types.uint16, (16, True): types.int16, (32, False): types.uint32,
          (64, False): types.uint64}


def new_memory(nr_pages: int) -> np.ndarray:
    """``nr_pages`` zeroed 4 KiB pages as one flat, page-aligned ``uint8`` array."""
    raw = np.zeros(nr_pages * XEN_PAGE_SIZE + XEN_PAGE_SIZE, np.uint8)
    start = (-raw.ctypes.data) % XEN_PAGE_SIZE
    return raw[start:start + nr_pages * XEN_PAGE_SIZE]


def page_offset(pfn) -> int:
    """Byte offset of guest frame ``pfn`` in its domain's memory."""
    return pfn << XEN_PAGE_SHIFT


# --- intrinsics: one load, store or memcpy at a byte offset -------------------------------------


def _byte_pointer(context, builder, aty, ary_val, off_val, off_ty, nbits):
    ary = context.make_array(aty)(context, builder, ary_val)
    off = context.cast(builder, off_val, off_ty, types.intp)
    ptr = builder.gep(ary.data, [off])
    return builder.bitcast(ptr, ir.IntType(nbits).as_pointer())


def _load(nbits, signed=False, ordering=None):
    rty = _TYPES[nbits, signed]

    def impl(typingctx, buf, off):
        def codegen(context, builder, sig, args):
            ptr = _byte_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1],
                                nbits)
            if ordering is not None:
                return builder.load_atomic(ptr, ordering, nbits // 8)
            return builder.load(ptr, align=1)

        return rty(buf, off), codegen

    return intrinsic(impl)


def _store(nbits, ordering=None):
    vty = _TYPES[nbits, False]

    def impl(typingctx, buf, off, val):
        def codegen(context, builder, sig, args):
            ptr = _byte_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1],
                                nbits)
            v = context.cast(builder, args[2], sig.args[2], vty)
            if ordering is not None:
                builder.store_atomic(v, ptr, ordering, nbits // 8)
            else:
                builder.store(v, ptr, align=1)
            return context.get_dummy_value()

        return types.void(buf, off, val), codegen

    return intrinsic(impl)


load_u16 = _load(16)
load_i16 = _load(16, signed=True)
load_u32 = _load(32)
load_u64 = _load(64)
store_u16 = _store(16)
store_u32 = _store(32)
store_u64 = _store(64)
#: Acquire load / release store of the aligned u32 at a byte offset (the ring's indices).
load_acquire_u32 = _load(32, ordering="acquire")
store_release_u32 = _store(32, ordering="release")


@intrinsic
def memcpy_bytes(typingctx, dst, dst_off, src, src_off, n):
    """``dst[dst_off:dst_off + n] = src[src_off:src_off + n]`` for uint8 buffers (no overlap)."""

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        d = builder.bitcast(_byte_pointer(context, builder, sig.args[0], args[0], args[1],
                                          sig.args[1], 8), i8p)
        s = builder.bitcast(_byte_pointer(context, builder, sig.args[2], args[2], args[3],
                                          sig.args[3], 8), i8p)
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        cgutils.raw_memcpy(builder, d, s, count, 1)
        return context.get_dummy_value()

    return types.void(dst, dst_off, src, src_off, n), codegen


# --- checked accessors (little-endian) ----------------------------------------------------------


@kernel
def _check(buf, off, n):
    if off < 0 or off + n > buf.size:
        raise IndexError("byte access outside the buffer")


@kernel
def get_u8(buf, off):
    """Read the byte at ``buf[off]``."""
    return np.int64(buf[off])


@kernel
def get_u16(buf, off):
    """Read the little-endian u16 at byte ``off``."""
    _check(buf, off, 2)
    return np.int64(load_u16(buf, off))


@kernel
def get_i16(buf, off):
    """Read the little-endian s16 at byte ``off``."""
    _check(buf, off, 2)
    return np.int64(load_i16(buf, off))


@kernel
def get_u32(buf, off):
    """Read the little-endian u32 at byte ``off``."""
    _check(buf, off, 4)
    return np.int64(load_u32(buf, off))


@kernel
def get_u64(buf, off):
    """Read the little-endian u64 at byte ``off`` (a ``uint64``)."""
    _check(buf, off, 8)
    return load_u64(buf, off)


@kernel
def put_u8(buf, off, v):
    """Write the byte ``v & 0xff`` at ``buf[off]``."""
    buf[off] = np.uint8(v & 0xFF)


@kernel
def put_u16(buf, off, v):
    """Write ``v & 0xffff`` (a u16, or an s16 in two's complement) at byte ``off``."""
    _check(buf, off, 2)
    store_u16(buf, off, np.uint16(v & 0xFFFF))


@kernel
def put_u32(buf, off, v):
    """Write ``v & 0xffffffff`` as a u32 at byte ``off``."""
    _check(buf, off, 4)
    store_u32(buf, off, np.uint32(v & MASK32))


@kernel
def put_u64(buf, off, v):
    """Write ``v`` as a u64 at byte ``off``."""
    _check(buf, off, 8)
    store_u64(buf, off, np.uint64(v))


@kernel
def copy_bytes(dst, dst_off, src, src_off, n):
    """Copy ``n`` bytes from ``src[src_off:]`` to ``dst[dst_off:]`` (no overlap)."""
    if n > 0:
        _check(dst, dst_off, n)
        _check(src, src_off, n)
        memcpy_bytes(dst, dst_off, src, src_off, n)


@kernel
def zero_bytes(buf, off, n):
    """Zero ``n`` bytes of ``buf`` from ``off`` (a multiple of 8 bytes)."""
    _check(buf, off, n)
    for k in range(off, off + n, 8):
        store_u64(buf, k, np.uint64(0))
