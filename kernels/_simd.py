"""Portable SIMD values for the Numba kernels: LLVM vectors of uint64 words.

Numba has no vector type, and LLVM's loop vectoriser does not find the carry-save
(Harley–Seal) structure of the binary GEMM by itself. So the kernels spell it out on
``<L x i64>`` values, typed here as :class:`U64Vec`. The IR is *generic* (``xor``,
``and``, ``or``, ``add``, ``shl``, ``llvm.ctpop``), never a target intrinsic: LLVM
lowers it to what the CPU has: two ymm registers per ``u64x8`` with AVX2 (``vpshufb``
nibble tables for ``ctpop``), zmm with AVX-512, xmm pairs with SSE, NEON on ARM. The code
is therefore correct and reasonably fast on every machine Numba runs on. Three byte
operations of the pixel kernels (:func:`vmaddubs`, :func:`vshufb`, :func:`vlut4`) call
x86 intrinsics when the target has AVX2, where LLVM's lowering of the generic form was
measured slower or does not exist; each keeps a generic form for other targets, tested
by forcing it (``tests/test_kernels.py::test_generic_byte_products_are_exact``).

The loads (:func:`vload8`, :func:`vbcast8`, ...) take a C-contiguous uint64 array and a
*flat* element index and do no bounds checking: callers index inside the array.
"""
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ._features import features_of


class U64Vec(types.Type):
    """A vector of ``lanes`` uint64 words (LLVM ``<lanes x i64>``)."""

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__(name=f"u64x{lanes}")


@register_model(U64Vec)
class _U64VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(64), fe_type.lanes))


u64x4 = U64Vec(4)
u64x8 = U64Vec(8)
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)


def _vt(lanes):
    return ir.VectorType(_I64, lanes)


def _splat_const(lanes, value):
    return ir.Constant(_vt(lanes), [value] * lanes)


def _flat_u64(arr, idx):
    return (isinstance(arr, types.Array) and arr.dtype == types.uint64 and arr.layout == "C"
            and isinstance(idx, types.Integer))


def _elem_ptr(context, builder, arrty, arr, idx):
    ary = cgutils.create_struct_proxy(arrty)(context, builder, value=arr)
    return builder.gep(ary.data, [idx])


def _splat(builder, x, lanes):
    v = builder.insert_element(ir.Constant(_vt(lanes), ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))


def _make_load(lanes):
    vty = U64Vec(lanes)

    def impl(typingctx, arr, idx):
        if not _flat_u64(arr, idx):
            return None

        def codegen(context, builder, sig, args):
            ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
            return builder.load(builder.bitcast(ptr, _vt(lanes).as_pointer()), align=8)
        return vty(arr, idx), codegen
    impl.__name__ = f"vload{lanes}"
    impl.__doc__ = f"Words ``arr.flat[idx : idx + {lanes}]`` as one vector (no bounds check)."
    return intrinsic(impl)


def _make_bcast(lanes):
    vty = U64Vec(lanes)

    def impl(typingctx, arr, idx):
        if not _flat_u64(arr, idx):
            return None

        def codegen(context, builder, sig, args):
            x = builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), align=8)
            return _splat(builder, x, lanes)
        return vty(arr, idx), codegen
    impl.__name__ = f"vbcast{lanes}"
    impl.__doc__ = f"``arr.flat[idx]`` in all {lanes} lanes (no bounds check)."
    return intrinsic(impl)


def _make_zero(lanes):
    vty = U64Vec(lanes)

    def impl(typingctx):
        def codegen(context, builder, sig, args):
            return _splat_const(lanes, 0)
        return vty(), codegen
    impl.__name__ = f"vzero{lanes}"
    return intrinsic(impl)


vload4, vload8 = _make_load(4), _make_load(8)
vbcast4, vbcast8 = _make_bcast(4), _make_bcast(8)
vzero4, vzero8 = _make_zero(4), _make_zero(8)


@intrinsic
def vstore(typingctx, arr, idx, v):
    """Store vector ``v`` to ``arr.flat[idx : idx + lanes]`` (no bounds check)."""
    if not (_flat_u64(arr, idx) and isinstance(v, U64Vec)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, _vt(v.lanes).as_pointer()), align=8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


def _binop(name, op):
    def impl(typingctx, a, b):
        if not (isinstance(a, U64Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    impl.__name__ = name
    return intrinsic(impl)


vxor = _binop("vxor", "xor")
vand = _binop("vand", "and_")
vor = _binop("vor", "or_")
vadd = _binop("vadd", "add")


@intrinsic
def vshl(typingctx, v, n):
    """Shift every lane left by the constant ``n``."""
    if not (isinstance(v, U64Vec) and isinstance(n, types.IntegerLiteral)):
        return None
    sh = n.literal_value

    def codegen(context, builder, sig, args):
        return builder.shl(args[0], _splat_const(v.lanes, sh))
    return v(v, n), codegen


def _ctpop(builder, x):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(x.type, [x.type]),
                                        f"llvm.ctpop.v{x.type.count}i{x.type.element.width}")
    return builder.call(fn, [x])


@intrinsic
def vpopcnt(typingctx, v):
    """Population count of every 64-bit lane (LLVM ``ctpop``)."""
    if not isinstance(v, U64Vec):
        return None

    def codegen(context, builder, sig, args):
        return _ctpop(builder, args[0])
    return v(v), codegen


@intrinsic
def vhsum(typingctx, v):
    """Sum of the lanes, a uint64 (LLVM ``vector.reduce.add``)."""
    if not isinstance(v, U64Vec):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [x.type]),
                                            f"llvm.vector.reduce.add.v{x.type.count}i64")
        return builder.call(fn, [x])
    return types.uint64(v), codegen


@intrinsic
def vaddb(typingctx, a, b):
    """Bytewise addition (wraps at 256)."""
    if not (isinstance(a, U64Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        bt = ir.VectorType(_I8, 8 * a.lanes)
        s = builder.add(builder.bitcast(args[0], bt), builder.bitcast(args[1], bt))
        return builder.bitcast(s, args[0].type)
    return a(a, b), codegen


@njit(cache=True)
def csa(a, b, c):
    """Carry-save adder over bit vectors: ``(carry, sum)`` with
    ``a + b + c = 2 carry + sum`` in every bit position (5 logic ops)."""
    u = vxor(a, b)
    return vor(vand(a, b), vand(u, c)), vxor(u, c)


@intrinsic
def vternlog(typingctx, a, b, c, imm):
    """AVX-512 ``vpternlogq``: any 3-input bit function (the truth table ``imm``) in one
    instruction, on u64x8. Only for forms that need "avx512f" (kernels/forms.py): on
    other targets LLVM cannot select it and compilation fails."""
    if not (isinstance(a, U64Vec) and a.lanes == 8 and a == b == c
            and isinstance(imm, types.IntegerLiteral)):
        return None
    table = imm.literal_value

    def codegen(context, builder, sig, args):
        return _x86(builder, "llvm.x86.avx512.pternlog.q.512", _vt(8),
                    [args[0], args[1], args[2], ir.Constant(_I32, table)])
    return a(a, b, c, imm), codegen


@njit(inline="always")
def csa_ternlog(a, b, c):
    """:func:`csa` as two ``vpternlogq``: 0xE8 is the majority (the carry), 0x96 the
    three-way xor (the sum). LLVM builds the generic form from 4–5 operations."""
    return vternlog(a, b, c, 0xE8), vternlog(a, b, c, 0x96)


@intrinsic
def load_u64(typingctx, arr, idx):
    """``arr.flat[idx]`` without bounds or negative-index handling."""
    if not _flat_u64(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), align=8)
    return types.uint64(arr, idx), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the cache to fetch ``arr.flat[idx]`` for reading (LLVM ``prefetch``; a no-op
    where the target has none). Out-of-range addresses are harmless: it never faults."""
    if not _flat_u64(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        ary = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32]),
            "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.none(arr, idx), codegen


vsub = _binop("vsub", "sub")


@intrinsic
def vsplat8(typingctx, x):
    """``x`` (an integer, reinterpreted as uint64) in all 8 lanes."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width < 64:
            v = builder.sext(v, _I64) if x.signed else builder.zext(v, _I64)
        return _splat(builder, v, 8)
    return u64x8(x), codegen


@intrinsic
def vlt_mask(typingctx, a, b):
    """Bit l set where lane l of ``a`` < lane l of ``b``, both read as *signed* int64."""
    if not (isinstance(a, U64Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        n = a.lanes
        m = builder.icmp_signed("<", args[0], args[1])
        bits = builder.bitcast(m, ir.IntType(n))
        return builder.zext(bits, _I64)
    return types.uint64(a, b), codegen


# --- 8- and 16-bit lanes, for the pixel kernel (:mod:`.pixels`) ---------------------
# A u64x4 doubles as 32 bytes or 16 int16 lanes (a bitcast, free in LLVM). The product
# below is spelt as plain IR (extend, multiply, add pairs, clamp to int16), which LLVM's
# x86 back end recognises as one ``vpmaddubsw`` (32 multiply-adds); elsewhere it compiles
# to the equivalent generic code.

_I16 = ir.IntType(16)


def _target_has(context, feature: str) -> bool:
    """Whether Numba compiles for a CPU with ``feature`` (an LLVM name, e.g. "avx2"):
    which lowering an intrinsic emits. The form itself (the algorithm) is the same on
    every target; which form runs is :mod:`.forms`'s choice."""
    return feature in features_of(context)


def _x86(builder, name, ret, args):
    """A call of the x86 LLVM intrinsic ``name`` (used only where the target has it)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _vec(t, n):
    return ir.VectorType(t, n)


@intrinsic
def vmaddubs(typingctx, a, b):
    """Pairwise products of *unsigned* bytes of ``a`` and *signed* bytes of ``b``, summed
    in pairs into 16 int16 lanes: ``lane l = a[2l] b[2l] + a[2l+1] b[2l+1]``, clamped to
    the int16 range (the clamp is what makes LLVM emit ``vpmaddubsw``; callers keep
    ``|lane| <= 32767`` so it never acts)."""
    if not (a == u64x4 and b == u64x4):
        return None

    def codegen(context, builder, sig, args):
        if _target_has(context, "avx2"):
            # x86's own intrinsic: LLVM matches the generic form below to vpmaddubsw
            # only while it knows nothing about b; when b is an unpacked mask (0 or -1
            # bytes, :func:`vbitmask8`) it folds the products into and/negate/shuffle
            # sequences 3.5× slower (measured, docs/performance-history.md, "Round 4")
            return builder.bitcast(_x86(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(_I16, 16),
                                        [builder.bitcast(v, _vec(_I8, 32)) for v in args]), _vt(4))
        und = ir.Constant(_vec(_I8, 32), ir.Undefined)
        even = ir.Constant(_vec(_I32, 16), list(range(0, 32, 2)))
        odd = ir.Constant(_vec(_I32, 16), list(range(1, 32, 2)))
        av, bv = (builder.bitcast(v, _vec(_I8, 32)) for v in args)

        def ext(v, idx, signed):
            part = builder.shuffle_vector(v, und, idx)
            return (builder.sext if signed else builder.zext)(part, _vec(_I32, 16))
        s = builder.add(builder.mul(ext(av, even, False), ext(bv, even, True)),
                        builder.mul(ext(av, odd, False), ext(bv, odd, True)))
        lo = ir.Constant(_vec(_I32, 16), [-32768] * 16)
        hi = ir.Constant(_vec(_I32, 16), [32767] * 16)
        s = builder.select(builder.icmp_signed(">", s, lo), s, lo)
        s = builder.select(builder.icmp_signed("<", s, hi), s, hi)
        return builder.bitcast(builder.trunc(s, _vec(_I16, 16)), _vt(4))
    return u64x4(a, b), codegen


@intrinsic
def vadd16(typingctx, a, b):
    """Lane-wise addition of 16 int16 lanes (wraps at 2**16)."""
    if not (a == u64x4 and b == u64x4):
        return None

    def codegen(context, builder, sig, args):
        s = builder.add(*(builder.bitcast(v, _vec(_I16, 16)) for v in args))
        return builder.bitcast(s, _vt(4))
    return u64x4(a, b), codegen


@intrinsic
def vaddto_i32(typingctx, arr, idx, v):
    """Add the 16 int16 lanes of ``v`` (sign-extended) to the 16 int32 values stored in
    words ``arr.flat[idx : idx + 8]`` (two per word, in memory order; no bounds check)."""
    if not (_flat_u64(arr, idx) and v == u64x4):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]),
                              _vec(_I32, 16).as_pointer())
        wide = builder.sext(builder.bitcast(args[2], _vec(_I16, 16)), _vec(_I32, 16))
        builder.store(builder.add(builder.load(ptr, align=8), wide), ptr, align=8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def vlt_i32_mask(typingctx, a, ai, b, bi):
    """Bit l set where int32 value l of ``a`` < int32 value l of ``b``, for the 16 int32
    values stored in words ``a.flat[ai : ai + 8]`` and ``b.flat[bi : bi + 8]`` (signed
    compare; no bounds check). Returns the 16-bit mask as a uint64."""
    if not (_flat_u64(a, ai) and _flat_u64(b, bi)):
        return None

    def codegen(context, builder, sig, args):
        vt = _vec(_I32, 16).as_pointer()
        va = builder.load(builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), vt), align=8)
        vb = builder.load(builder.bitcast(_elem_ptr(context, builder, sig.args[2], args[2], args[3]), vt), align=8)
        m = builder.bitcast(builder.icmp_signed("<", va, vb), ir.IntType(16))
        return builder.zext(m, _I64)
    return types.uint64(a, ai, b, bi), codegen



@intrinsic
def vbitmask8(typingctx, v, t):
    """Bytes of ``v`` with bit ``t`` (a constant, 0..7) set → -1, others → 0: a shift
    moving bit ``t`` to each byte's sign, and a signed compare (2 vector operations on
    x86). With the sign bits of 8 weight vectors sliced across one vector's bytes, this
    unpacks one of them (:func:`.pixels.pixel_signs`)."""
    if not (v == u64x4 and isinstance(t, types.IntegerLiteral) and 0 <= t.literal_value < 8):
        return None
    sh = 7 - t.literal_value

    def codegen(context, builder, sig, args):
        # a 16-bit shift moves bit t of both bytes of a lane to their bit 7 (the low byte's
        # high bits spill into the high byte's low ones, which the sign test ignores)
        x = builder.shl(builder.bitcast(args[0], _vec(_I16, 16)), ir.Constant(_vec(_I16, 16), [sh] * 16))
        neg = builder.icmp_signed("<", builder.bitcast(x, _vec(_I8, 32)), ir.Constant(_vec(_I8, 32), [0] * 32))
        return builder.bitcast(builder.sext(neg, _vec(_I8, 32)), _vt(4))
    return u64x4(v, t), codegen


@intrinsic
def vlt16_mask(typingctx, v, b, bi):
    """Bit l set where int16 lane l of ``v`` (sign-extended) < int32 value l of the 16
    stored in words ``b.flat[bi : bi + 8]``: a sum still in its 16-bit lanes compared
    with :func:`.pixels.pixel_thresholds` directly, without passing through memory."""
    if not (v == u64x4 and _flat_u64(b, bi)):
        return None

    def codegen(context, builder, sig, args):
        vt = _vec(_I32, 16)
        wide = builder.sext(builder.bitcast(args[0], _vec(_I16, 16)), vt)
        vb = builder.load(builder.bitcast(_elem_ptr(context, builder, sig.args[1], args[1], args[2]),
                                          vt.as_pointer()), align=8)
        return builder.zext(builder.bitcast(builder.icmp_signed("<", wide, vb), ir.IntType(16)), _I64)
    return types.uint64(v, b, bi), codegen


# --- table lookups, for the pixel kernel's lookup form (:func:`.pixels._pixel_lut`) ----

@intrinsic
def vdup2(typingctx, v, part):
    """16-byte half ``part`` (a constant, 0 or 1) of ``v`` in both halves:
    ``(w0, w1, w0, w1)`` or ``(w2, w3, w2, w3)``: how the lookup form stores a table
    for :func:`vshufb`, which reads each 16-byte half of its table operand."""
    if not (v == u64x4 and isinstance(part, types.IntegerLiteral) and part.literal_value in (0, 1)):
        return None
    p = 2 * part.literal_value

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[0], ir.Constant(_vec(_I32, 4), [p, p + 1, p, p + 1]))
    return u64x4(v, part), codegen


@intrinsic
def vshufb(typingctx, table, idx):
    """Byte lookup in each 16-byte lane: byte ``j`` of the result is byte ``idx[j] & 15``
    of ``table``'s lane that holds ``j`` (callers keep ``idx`` bytes below 16), on u64x4
    (32 bytes) or u64x8 (64). One ``vpshufb`` on AVX2 (AVX-512BW for u64x8); elsewhere,
    byte by byte."""
    if not (table in (u64x4, u64x8) and idx == table):
        return None
    nbytes = 8 * table.lanes

    def codegen(context, builder, sig, args):
        bt = _vec(_I8, nbytes)
        t, i = (builder.bitcast(v, bt) for v in args)
        if nbytes == 32 and _target_has(context, "avx2"):
            return builder.bitcast(_x86(builder, "llvm.x86.avx2.pshuf.b", bt, [t, i]), _vt(4))
        if nbytes == 64 and _target_has(context, "avx512bw"):
            return builder.bitcast(_x86(builder, "llvm.x86.avx512.pshuf.b.512", bt, [t, i]), _vt(8))
        out = ir.Constant(bt, ir.Undefined)
        for j in range(nbytes):
            e = builder.and_(builder.extract_element(i, ir.Constant(_I32, j)), ir.Constant(_I8, 15))
            src = builder.add(builder.zext(e, _I32), ir.Constant(_I32, j // 16 * 16))
            out = builder.insert_element(out, builder.extract_element(t, src), ir.Constant(_I32, j))
        return builder.bitcast(out, _vt(nbytes // 8))
    return table(table, idx), codegen


@intrinsic
def vzip16(typingctx, lo, hi, part):
    """16 int16 values from their low bytes ``lo`` and high bytes ``hi``: in each 16-byte
    half, bytes ``8·part … 8·part + 7`` of both, interleaved (``vpunpck{l,h}bw``)."""
    if not (lo == u64x4 and hi == u64x4 and isinstance(part, types.IntegerLiteral)):
        return None
    base = 8 * part.literal_value
    mask = []
    for half in (0, 16):
        for j in range(8):
            mask += [half + base + j, 32 + half + base + j]

    def codegen(context, builder, sig, args):
        bt = _vec(_I8, 32)
        a, b = (builder.bitcast(v, bt) for v in args[:2])
        return builder.bitcast(builder.shuffle_vector(a, b, ir.Constant(_vec(_I32, 32), mask)), _vt(4))
    return u64x4(lo, hi, part), codegen



def _low32(builder, w):
    """An integer argument as its low 32 bits (truncated or zero-extended)."""
    if w.type.width == 32:
        return w
    return builder.trunc(w, _I32) if w.type.width > 32 else builder.zext(w, _I32)


def _lut4_avx2(builder, w):
    """:func:`vlut4` in 6 instructions: the pixels in every 32-bit lane, byte products
    with the entries' signs summed in pairs (``vpmaddubsw``: entry e's x0, x1 terms in
    lane 2e, x2, x3 in lane 2e+1), pairs summed (``vpmaddwd`` by 1) and packed back to
    int16 (entries 0-3, 8-11 | 4-7, 12-15), then split into low and high bytes in order
    (``vpshufb``, ``vpermd``). Generic IR does not reach this: LLVM folds the products
    by constant signs into slower code."""
    i8x32, i16x16, i32x8 = _vec(_I8, 32), _vec(_I16, 16), _vec(_I32, 8)
    v = builder.insert_element(ir.Constant(i32x8, ir.Undefined), w, ir.Constant(_I32, 0))
    x = builder.bitcast(builder.shuffle_vector(v, v, ir.Constant(i32x8, [0] * 8)), i8x32)
    sums = []
    for first in (0, 8):
        sign = ir.Constant(i8x32, [-1 if ((first + j // 4) >> (j % 4)) & 1 else 1 for j in range(32)])
        pairs = _x86(builder, "llvm.x86.avx2.pmadd.ub.sw", i16x16, [x, sign])
        sums.append(_x86(builder, "llvm.x86.avx2.pmadd.wd", i32x8, [pairs, ir.Constant(i16x16, [1] * 16)]))
    t = _x86(builder, "llvm.x86.avx2.packssdw", i16x16, sums)  # |entry| <= 1020: no saturation
    split = ir.Constant(i8x32, (list(range(0, 16, 2)) + list(range(1, 16, 2))) * 2)
    b = _x86(builder, "llvm.x86.avx2.pshuf.b", i8x32, [builder.bitcast(t, i8x32), split])
    # dwords now: lo(0-3) lo(8-11) hi(0-3) hi(8-11) | lo(4-7) lo(12-15) hi(4-7) hi(12-15)
    order = ir.Constant(i32x8, [0, 4, 1, 5, 2, 6, 3, 7])
    return builder.bitcast(_x86(builder, "llvm.x86.avx2.permd", i32x8, [builder.bitcast(b, i32x8), order]), _vt(4))

@intrinsic
def vlut4(typingctx, word):
    """The lookup table of four pixels (the low 32 bits of ``word``, ``x_0`` lowest):
    entry ``p`` (0..15) is ``Σ_i ±x_i``, minus where bit ``i`` of ``p`` is set, an int16
    in [-1020, 1020]; returned as 32 bytes, the 16 entries' low bytes then their high
    bytes (the two tables of :func:`vshufb`)."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        w = _low32(builder, args[0])
        if _target_has(context, "avx2"):
            return _lut4_avx2(builder, w)
        px = builder.zext(builder.bitcast(w, _vec(_I8, 4)), _vec(_I16, 4))
        total = None
        for i in range(4):
            xi = builder.shuffle_vector(px, px, ir.Constant(_vec(_I32, 16), [i] * 16))
            sign = ir.Constant(_vec(_I16, 16), [-1 if (p >> i) & 1 else 1 for p in range(16)])
            term = builder.mul(xi, sign)
            total = term if total is None else builder.add(total, term)
        b = builder.bitcast(total, _vec(_I8, 32))
        order = list(range(0, 32, 2)) + list(range(1, 32, 2))
        return builder.bitcast(builder.shuffle_vector(b, b, ir.Constant(_vec(_I32, 32), order)), _vt(4))
    return u64x4(word), codegen


# --- nibble lookups, for the binary dense layer of :mod:`.nibbles` -----------------------

_POP4 = [bin(j).count("1") for j in range(16)]


@intrinsic
def vpop4(typingctx, a):
    """The two mismatch tables of one byte ``a`` of a packed row (two groups of 4 bits):
    byte ``j`` of the low 16-byte half is ``popcount(j XOR (a & 15))``, of the high half
    ``popcount(j XOR (a >> 4))``. Indexed by a unit's 4 weight bits (:func:`vshufb`), an
    entry counts the group's disagreements. One ``vpshufb`` of the constant popcount
    table on AVX2; ``llvm.ctpop`` elsewhere."""
    if not isinstance(a, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i8x32 = _vec(_I8, 32)
        x = builder.trunc(args[0], _I8) if args[0].type.width > 8 else args[0]
        v = builder.insert_element(ir.Constant(i8x32, ir.Undefined), x, ir.Constant(_I32, 0))
        v = builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, 32), [0] * 32))
        # the high half's bytes shifted down by 4 (a 16-bit shift; the mask drops the spill)
        sh = builder.lshr(builder.bitcast(v, _vec(_I16, 16)), ir.Constant(_vec(_I16, 16), [0] * 8 + [4] * 8))
        nib = builder.and_(builder.bitcast(sh, i8x32), ir.Constant(i8x32, [15] * 32))
        idx = builder.xor(ir.Constant(i8x32, list(range(16)) * 2), nib)
        if _target_has(context, "avx2"):
            t = _x86(builder, "llvm.x86.avx2.pshuf.b", i8x32, [ir.Constant(i8x32, _POP4 * 2), idx])
        else:
            t = _ctpop(builder, idx)
        return builder.bitcast(t, _vt(4))
    return u64x4(a), codegen


@intrinsic
def vload2x2(typingctx, arr, idx):
    """Words ``arr.flat[idx : idx + 2]`` in both 16-byte halves (one ``vbroadcasti128``
    on AVX2; no bounds check): a 16-byte table of :func:`vpop4` for :func:`vshufb`."""
    if not _flat_u64(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        v = builder.load(builder.bitcast(ptr, _vt(2).as_pointer()), align=8)
        return builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, 4), [0, 1, 0, 1]))
    return u64x4(arr, idx), codegen


@intrinsic
def vload2x4(typingctx, arr, idx):
    """Words ``arr.flat[idx : idx + 2]`` in all four 16-byte lanes of a u64x8 (one
    ``vbroadcasti32x4``; no bounds check): :func:`vload2x2` for 512-bit lookups."""
    if not _flat_u64(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        v = builder.load(builder.bitcast(ptr, _vt(2).as_pointer()), align=8)
        return builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, 8), [0, 1] * 4))
    return u64x8(arr, idx), codegen


@intrinsic
def vsub2_u8_i32(typingctx, arr, idx, v):
    """Subtract twice the unsigned bytes of ``v`` (32 of a u64x4, 64 of a u64x8) from as
    many int32 values stored from word ``arr.flat[idx]`` on (two per word, in memory
    order; no bounds check): ``K - 2 · mismatches``, one chunk of byte counts at a time."""
    if not (_flat_u64(arr, idx) and v in (u64x4, u64x8)):
        return None
    nbytes = 8 * v.lanes

    def codegen(context, builder, sig, args):
        i32xn = _vec(_I32, nbytes)
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), i32xn.as_pointer())
        wide = builder.zext(builder.bitcast(args[2], _vec(_I8, nbytes)), i32xn)
        twice = builder.shl(wide, ir.Constant(i32xn, [1] * nbytes))
        builder.store(builder.sub(builder.load(ptr, align=8), twice), ptr, align=8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


# --- 8-bit dot products on 512-bit vectors, for the VNNI pixel form (:mod:`.vnni`)

@intrinsic
def vsplat32(typingctx, word):
    """The low 32 bits of ``word`` in all 16 32-bit lanes of a u64x8 (``vpbroadcastd``):
    four pixels, for :func:`vdpbusd`."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        w = _low32(builder, args[0])
        v = builder.insert_element(ir.Constant(_vec(_I32, 16), ir.Undefined), w, ir.Constant(_I32, 0))
        v = builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, 16), [0] * 16))
        return builder.bitcast(v, _vt(8))
    return u64x8(word), codegen


@intrinsic
def vdpbusd(typingctx, acc, a, b):
    """``acc`` (16 int32 lanes) plus, in each lane, the four products of *unsigned* bytes
    of ``a`` and *signed* bytes of ``b``: ``lane l += Σ_{i<4} a[4l+i] · b[4l+i]``, exact
    (no saturation; callers keep sums inside int32). One ``vpdpbusd`` (AVX-512 VNNI)
    where the target has it; elsewhere generic IR (widen, multiply, add the groups)."""
    if not (acc == u64x8 and a == u64x8 and b == u64x8):
        return None

    def codegen(context, builder, sig, args):
        i32x16 = _vec(_I32, 16)
        if _target_has(context, "avx512vnni"):
            # the <16 x i32> operand types: LLVM 22 upgrades them to its <64 x i8> form,
            # and the LLVM of older llvmlite releases accepts only them
            r = _x86(builder, "llvm.x86.avx512.vpdpbusd.512", i32x16,
                     [builder.bitcast(v, i32x16) for v in args])
            return builder.bitcast(r, _vt(8))
        i8x64, i32x64 = _vec(_I8, 64), _vec(_I32, 64)
        p = builder.mul(builder.zext(builder.bitcast(args[1], i8x64), i32x64),
                        builder.sext(builder.bitcast(args[2], i8x64), i32x64))
        s = builder.bitcast(args[0], i32x16)
        for i in range(4):
            s = builder.add(s, builder.shuffle_vector(p, p, ir.Constant(i32x16, list(range(i, 64, 4)))))
        return builder.bitcast(s, _vt(8))
    return u64x8(acc, a, b), codegen
