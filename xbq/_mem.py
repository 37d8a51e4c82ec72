"""Typed loads, stores and copies at byte offsets of a ``uint8`` buffer, for jitted code.

``buf.view(np.uint32)[off >> 2]`` is the obvious way to read a field out of a ring slot in
numba, but every ``view`` re-derives the array's shape and strides (tens of nanoseconds, more
than the protocol step itself). These intrinsics compute the address once and emit a single
load or store (or LLVM's ``memcpy``). Callers check bounds (see :mod:`xbq.ring`); these do not.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_TYPES = {(16, False): types.uint16, (16, True): types.int16, (32, False): types.uint32,
          (64, False): types.uint64}


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

