"""The first layer on pixels of S networks in one call, in any pixel form.

A stack of networks (local energy's perturbed copies, the points of a path) evaluates
its first layer on the same input for every network. :func:`pixel_stack_t` takes the
stack's weights in one form's layout, (S, …), and runs every network's product in one
compiled call: one network per thread when there are enough of them, else one network
after another on every thread. The forms are those of :mod:`.pixels` and :mod:`.vnni`;
which one runs is the caller's choice (:mod:`.forms`).
"""
import numba as nb
import numpy as np

from ._threads import twin
from .pixels import (_pixel_dense, _pixel_lut, _pixel_signed, one_per_thread, pixel_lut_weights,
                     pixel_signs, pixel_weights, pixel_work, stack_outputs)
from .vnni import _pixel_vnni, pixel_vnni_weights

PAIR_FORMS = ("bytes", "signs")  # the forms that read pixel pairs (a convolution's patches too)
# the serial kernel that _stack runs per network: a module-level name, which Numba
# resolves inside compiled code (a Twin's attribute it does not); each form's stack is
# _stack compiled with its own kernel swapped in (Twin.variant)
_one = _pixel_dense.serial


@twin
def _stack(x, w, T, h, bits):
    """``_one`` for each of the S networks of ``w`` (S, …) on the same input rows ``x``,
    one network per task (each network's product on one thread)."""
    for s in nb.prange(w.shape[0]):
        _one(x, w[s], T[s], h[s], bits[s])


_KERNELS = {"bytes": _pixel_dense, "signs": _pixel_signed, "lookup": _pixel_lut, "vnni": _pixel_vnni}
_STACKS = {f: _stack.variant(f"_{f}", {"_one": k.serial}) for f, k in _KERNELS.items()}

# form -> (the layout of one network's ±1 weights (M, K), single kernel, stacked kernel)
_LAYOUTS = {
    "bytes": lambda w: pixel_weights(w, check=False),
    "signs": lambda w: pixel_signs(pixel_weights(w, check=False)),
    "lookup": lambda w: pixel_lut_weights(w, check=False),
    "vnni": lambda w: pixel_vnni_weights(w, check=False),
}
STACK_FORMS = {f: (_LAYOUTS[f], _KERNELS[f], _STACKS[f]) for f in _KERNELS}


def _form(form):
    if form not in STACK_FORMS:
        raise ValueError(f"pixel product: unknown form {form!r}; expected one of "
                         f"{', '.join(STACK_FORMS)}")
    return STACK_FORMS[form]


def pixel_stack_weights(form: str, w_pm1) -> np.ndarray:
    """±1 weights (S, M, K) of S networks → their stacked layout for ``form`` (S, …),
    the input of :func:`pixel_stack_t`."""
    layout = _form(form)[0]
    w = np.asarray(w_pm1)
    return np.stack([layout(w[s]) for s in range(w.shape[0])])


def pixel_stack_t(form: str, rows, weights, m: int, thresholds=None):
    r"""The pixel product of S networks in one call: :math:`h_{snj} = \sum_i x_{ni}
    w_{sji}` for the rows of one input and the stacked weights of :func:`pixel_stack_weights`
    in ``form`` ("bytes", "signs", "lookup" or "vnni"); unchecked. ``rows``: uint8 pixels
    (N, K) C-contiguous for "lookup" and "vnni", the pairs of :func:`pixel_pairs` (or of a convolution's
    :func:`pixel_patches_t`) for the other two. ``thresholds``: None, or (S, words) stacked
    :func:`pixel_thresholds`.

    Each network's product runs on one thread when there are at least two networks per
    thread, or a multiple of the thread count (no thread idles at the end); otherwise
    (S = 1, say) one network after another, each on every thread.

    Returns:
        int32 (S, N, m), or with ``thresholds`` the packed bits uint64 (S, N, ceil(m/64)).
    """
    _, single, stacked = _form(form)
    S, n = weights.shape[0], rows.shape[0]
    pairs = rows.shape[1] if form in PAIR_FORMS else -(-rows.shape[1] // 2)
    blocks = weights.shape[1]
    T, h, bits, out = stack_outputs(S, n, m, blocks, thresholds)
    if out.size == 0:
        return out
    work = pixel_work(n, m, pairs)
    if one_per_thread(S, nb.get_num_threads()):
        stacked(S * work, rows, weights, T, h, bits)
    else:
        for s in range(S):
            single(work, rows, weights[s], T[s], h[s], bits[s])
    return out


