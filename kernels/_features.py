"""The CPU features Numba compiles for: the one reader of them in the package.

Both users go through here: the form registry (:mod:`.forms`) chooses a form from
these features, and the few intrinsics of :mod:`._simd` that have an x86 lowering and a
generic one pick the lowering from the same set. That set is the host CPU's unless
``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name another target (for ``inspect_asm`` of
a CPU one does not have); the compiled code then has that target's instructions, so
its features are the ones that count.
"""
from __future__ import annotations


def features_of(context) -> frozenset:
    """LLVM feature names (e.g. "avx2", "avx512vpopcntdq") of the target machine that
    Numba's target ``context`` compiles for."""
    # Numba keeps the target machine's feature string on its codegen object (no public
    # accessor); llvmlite's host features are the fallback should that attribute move.
    text = getattr(context.codegen(), "_tm_features", None)
    if text:
        return frozenset(f[1:] for f in text.split(",") if f.startswith("+"))
    import llvmlite.binding as llvm

    return frozenset(k for k, on in llvm.get_host_cpu_features().items() if on)


def target_features() -> frozenset:
    """:func:`features_of` Numba's CPU target (the one ``@njit`` code compiles for)."""
    from numba.core.registry import cpu_target

    return features_of(cpu_target.target_context)
