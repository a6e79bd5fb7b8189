"""LLVM intrinsics that Numba does not expose.

Numba rejects ``int.bit_count`` and ``np.bitwise_count`` in nopython mode, so the
population count is emitted as LLVM's ``llvm.ctpop.i64``. LLVM lowers it to ``popcnt``
on x86 (or to a ``vpshufb`` table lookup when the loop vectorises).
"""
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``)."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen
