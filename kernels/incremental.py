r"""Incremental evaluation of single moves on a dense binary network (docs/methods.md, "Incremental evaluation").

Connectivity search (Pittorino et al., ICML 2022, §4 and docs/methods.md, "Connectivity search", *[ours]*) tries many
candidate moves per step. Re-running the whole network per candidate costs
``N · Σ_l units_l · fan_in_l`` binary MACs; a single move changes much less:

- flipping weight ``w_ij`` of layer l shifts unit i's pre-activation by
  ``Δh_i = −2 w_ij x_j`` on every sample (O(N));
- a threshold step changes unit i's output only on samples whose ``h_i`` lies in the
  crossed range (O(N) to find them);
- only samples whose unit output changed are propagated: each changes the next layer's
  pre-activations by ``2 a'_i W_{l+1}[:, i]`` (``a'`` the new ±1 output), and so on down
  to the logits, the argmax and the per-sample correctness.

Candidates are evaluated on scratch rows, without touching the cached state, in
parallel over candidates; :func:`commit_moves` then applies chosen moves to the state.

**State** (plain numpy arrays; ``L+1`` dense layers, layer ``L`` the output, ``L >= 1``,
``N`` samples; ``u_l`` units and ``k_l`` inputs of layer l):

- ``x0t`` (k_0, N): the first layer's inputs, transposed: int8 ±1 (binarised input) or
  float64 (real input);
- ``h0``, ``h0t``: layer 0's pre-activations (N, u_0) and transposed (u_0, N); int32, or
  float64 on real input. ``t0``: its thresholds (int64, or float64 on real input);
- ``w``, ``wt``: int8 ±1 weights of all layers, flat: layer l at ``woff[l]``, row-major
  (u_l, k_l) in ``w`` and transposed (k_l, u_l) in ``wt``;
- ``h``, ``ht``: int32 pre-activations of layers 1..L, flat: layer l at ``hoff[l]``, (N, u_l)
  row-major in ``h``, (u_l, N) in ``ht`` (``ht`` of the output layer is not maintained);
- ``t``: int64 thresholds of layers 1..L−1 at ``toff[l]``;
- ``at``: int8 ±1 outputs of layers 0..L−1, transposed (u_l, N), at ``aoff[l]``;
- ``scale``, ``bias``: float64 output affine (logits ``scale·h + bias``, exactly as the full
  evaluator computes them); ``y`` labels; ``pred`` (argmax, first index on ties) and
  ``correct`` (uint8) per sample.

Moves are six arrays (``kind``, ``layer``, ``index``, ``delta``, ``value``, ``value2``) with
the kinds of :mod:`bnn_toroid.paths.moves`: 0 flip (``index`` = i·k_l + j), 1 threshold
step by ``delta``, 2 threshold set to ``value``, 3 output unit ``index`` set to
(``value``, ``value2``). Every kernel here is exact integer arithmetic except on a
real-valued first layer (float64; exact for integer-valued inputs such as uint8 images).
"""
import numba as nb
import numpy as np

from ._threads import twin

__all__ = ["evaluate_moves", "commit_moves", "FLIP", "STEP", "SET", "OUTPUT"]

FLIP, STEP, SET, OUTPUT = 0, 1, 2, 3


@nb.njit(cache=True)
def _argmax_row(row, scale, bias, c_n, c_new, v_new):
    """First index of the max of ``scale·row + bias``, class ``c_new`` replaced by ``v_new``
    (``c_new = -1``: none)."""
    best = 0
    bv = v_new if c_new == 0 else np.float64(row[0]) * scale[0] + bias[0]
    for c in range(1, c_n):
        v = v_new if c == c_new else np.float64(row[c]) * scale[c] + bias[c]
        if v > bv:
            bv = v
            best = c
    return best


@nb.njit(cache=True)
def _propagate(s, l, n_ch, cu, cv, cu2, cv2, row, w, wt, h, ht, t, at, units, woff, hoff,
               toff, aoff, n, scale, bias, y, pred, correct, commit):
    """Sample ``s``: units ``cu[:n_ch]`` of layer ``l`` changed to outputs ``cv``. Returns the
    sample's new correctness; with ``commit`` writes layers l+1..L of the state."""
    big_l = units.shape[0] - 1
    # Inner loops run over slices (views): indexing a view with a range variable lets LLVM
    # drop Numba's negative-index wraparound and vectorise (measured 9x on the row update).
    for m in range(l + 1, big_l + 1):
        um = units[m]
        hb = hoff[m] + s * um
        hrow = h[hb:hb + um]
        r = row[:um]
        for v in range(um):
            r[v] = hrow[v]
        for k in range(n_ch):
            base = woff[m] + cu[k] * um
            wcol = wt[base:base + um]
            g = np.int32(2 * cv[k])
            for v in range(um):
                r[v] += g * wcol[v]
        if m == big_l:
            p = _argmax_row(r, scale, bias, um, -1, 0.0)
            ok = np.uint8(1) if p == y[s] else np.uint8(0)
            if commit:
                for v in range(um):
                    hrow[v] = r[v]
                pred[s] = p
                correct[s] = ok
            return ok
        trow = t[toff[m]:toff[m] + um]
        n2 = 0
        for v in range(um):
            tv = trow[v]
            if (hrow[v] >= tv) != (r[v] >= tv):
                cu2[n2] = v
                cv2[n2] = 1 if r[v] >= tv else -1
                n2 += 1
        if commit:
            htb = hoff[m]
            ab = aoff[m]
            for v in range(um):
                hrow[v] = r[v]
                ht[htb + v * n + s] = r[v]
            for k in range(n2):
                at[ab + cu2[k] * n + s] = cv2[k]
        if n2 == 0:
            return correct[s]
        cu, cu2 = cu2, cu
        cv, cv2 = cv2, cv
        n_ch = n2
    return correct[s]


@nb.njit(cache=True)
def _flags(hcol, xcol, acol, d, flip, t_new, flag):
    """flag[s] = unit output changes on sample s (pre-activation shifted by ``d·x`` when
    ``flip``, compared with ``t_new``). Branch-free so that LLVM vectorises it: the O(N)
    scan every candidate pays."""
    n = hcol.shape[0]
    if flip:
        for s in range(n):
            flag[s] = ((hcol[s] + d * xcol[s]) >= t_new) != (acol[s] > 0)
    else:
        for s in range(n):
            flag[s] = (hcol[s] >= t_new) != (acol[s] > 0)


@nb.njit(cache=True)
def _shift(hcol, xcol, d):
    for s in range(hcol.shape[0]):
        hcol[s] += d * xcol[s]


@nb.njit(cache=True)
def _move(kind, l, index, delta, value, value2, x0t, h0, h0t, t0, w, wt, h, ht, t, at,
          units, fanin, woff, hoff, toff, aoff, scale, bias, y, pred, correct, commit,
          row, cu, cv, cu2, cv2, flag):
    """Change in the number of misclassified samples caused by one move (applied to the
    state when ``commit``)."""
    n = y.shape[0]
    big_l = units.shape[0] - 1
    ul = units[l]
    kl = fanin[l]
    dw = 0
    if kind == FLIP:
        i = index // kl
        j = index - i * kl
    else:
        i = index
        j = 0
    wij = np.int32(w[woff[l] + index]) if kind == FLIP else np.int32(0)
    if l == big_l:
        # output unit i: its logit changes on every sample; only argmax membership matters
        sc_old = scale[i]
        b_old = bias[i]
        sc = value if kind == OUTPUT else sc_old
        bc = value2 if kind == OUTPUT else b_old
        ab = aoff[l - 1]
        for s in range(n):
            hv = h[hoff[l] + s * ul + i]
            hn = hv
            if kind == FLIP:
                hn = hv - 2 * wij * np.int32(at[ab + j * n + s])
            v_new = np.float64(hn) * sc + bc
            p = pred[s]
            if p == i:
                v_old = np.float64(hv) * sc_old + b_old
                if v_new >= v_old:
                    pn = i
                else:
                    pn = _argmax_row(h[hoff[l] + s * ul:hoff[l] + (s + 1) * ul], scale, bias, ul, i, v_new)
            else:
                vp = np.float64(h[hoff[l] + s * ul + p]) * scale[p] + bias[p]
                pn = i if (v_new > vp or (v_new == vp and i < p)) else p
            ok = np.uint8(1) if pn == y[s] else np.uint8(0)
            dw += np.int64(correct[s]) - np.int64(ok)
            if commit:
                h[hoff[l] + s * ul + i] = hn
                pred[s] = pn
                correct[s] = ok
        if commit and kind == OUTPUT:
            scale[i] = value
            bias[i] = value2
    elif l == 0:
        t_new = np.float64(t0[i])
        if kind == STEP:
            t_new = np.float64(t0[i] + delta)
        elif kind == SET:
            t_new = value
        acol = at[aoff[0] + i * n:aoff[0] + (i + 1) * n]
        hcol = h0t[i]
        xcol = x0t[j]
        _flags(hcol, xcol, acol, -2 * wij, kind == FLIP, t_new, flag)
        if commit and kind == FLIP:
            _shift(hcol, xcol, -2 * wij)
            for s in range(n):
                h0[s, i] = hcol[s]
        for s in range(n):
            if flag[s]:
                a_new = -acol[s]
                old = correct[s]
                if commit:
                    acol[s] = a_new
                cu[0] = i
                cv[0] = a_new
                ok = _propagate(s, 0, 1, cu, cv, cu2, cv2, row, w, wt, h, ht, t, at, units, woff,
                                hoff, toff, aoff, n, scale, bias, y, pred, correct, commit)
                dw += np.int64(old) - np.int64(ok)
        if commit:
            if kind == STEP:
                t0[i] += delta
            elif kind == SET:
                t0[i] = value
    else:
        tb = toff[l] + i
        t_new = t[tb] + delta if kind == STEP else t[tb]
        hcol = ht[hoff[l] + i * n:hoff[l] + (i + 1) * n]
        acol = at[aoff[l] + i * n:aoff[l] + (i + 1) * n]
        xcol = at[aoff[l - 1] + j * n:aoff[l - 1] + (j + 1) * n]
        _flags(hcol, xcol, acol, np.int32(-2 * wij), kind == FLIP, t_new, flag)
        if commit and kind == FLIP:
            _shift(hcol, xcol, np.int32(-2 * wij))
            hb = hoff[l] + i
            for s in range(n):
                h[hb + s * ul] = hcol[s]
        for s in range(n):
            if flag[s]:
                a_new = -acol[s]
                old = correct[s]
                if commit:
                    acol[s] = a_new
                cu[0] = i
                cv[0] = a_new
                ok = _propagate(s, l, 1, cu, cv, cu2, cv2, row, w, wt, h, ht, t, at, units, woff,
                                hoff, toff, aoff, n, scale, bias, y, pred, correct, commit)
                dw += np.int64(old) - np.int64(ok)
        if commit and kind == STEP:
            t[tb] += delta
    if commit and kind == FLIP:
        w[woff[l] + index] = -w[woff[l] + index]
        wt[woff[l] + j * ul + i] = -wt[woff[l] + j * ul + i]
    return dw


@twin
def _evaluate(kinds, layers, index, delta, value, value2, x0t, h0, h0t, t0, w, wt, h, ht, t, at,
              units, fanin, woff, hoff, toff, aoff, scale, bias, y, pred, correct, out):
    maxu = units.max()
    for m in nb.prange(kinds.shape[0]):
        row = np.empty(maxu, np.int32)
        cu = np.empty(maxu, np.int64)
        cu2 = np.empty(maxu, np.int64)
        cv = np.empty(maxu, np.int8)
        cv2 = np.empty(maxu, np.int8)
        flag = np.empty(y.shape[0], np.bool_)
        out[m] = _move(kinds[m], layers[m], index[m], delta[m], value[m], value2[m], x0t, h0, h0t,
                       t0, w, wt, h, ht, t, at, units, fanin, woff, hoff, toff, aoff, scale, bias,
                       y, pred, correct, False, row, cu, cv, cu2, cv2, flag)


@nb.njit(cache=True)
def _commit(kinds, layers, index, delta, value, value2, x0t, h0, h0t, t0, w, wt, h, ht, t, at,
            units, fanin, woff, hoff, toff, aoff, scale, bias, y, pred, correct, wrong, out):
    maxu = units.max()
    row = np.empty(maxu, np.int32)
    cu = np.empty(maxu, np.int64)
    cu2 = np.empty(maxu, np.int64)
    cv = np.empty(maxu, np.int8)
    cv2 = np.empty(maxu, np.int8)
    flag = np.empty(y.shape[0], np.bool_)
    for m in range(kinds.shape[0]):
        wrong += _move(kinds[m], layers[m], index[m], delta[m], value[m], value2[m], x0t, h0, h0t,
                       t0, w, wt, h, ht, t, at, units, fanin, woff, hoff, toff, aoff, scale, bias,
                       y, pred, correct, True, row, cu, cv, cu2, cv2, flag)
        out[m] = wrong


def _move_arrays(moves):
    return tuple(np.ascontiguousarray(moves[f]) for f in ("kind", "layer", "index", "delta", "value", "value2"))


def evaluate_moves(moves, state) -> np.ndarray:
    r"""Change in the number of misclassified samples, ``ΔW_m = W(θ ⊕ m) − W(θ)``, for each
    candidate move ``m`` applied alone to the cached state ``θ`` (module docstring). The
    state is read only; candidates run in parallel.

    Args:
        moves: a structured array with fields kind, layer, index, delta, value, value2
            (``bnn_toroid.paths.moves.MOVE_DTYPE``); layers are dense layer indices.
        state: the tuple ``(x0t, h0, h0t, t0, w, wt, h, ht, t, at, units, fanin, woff,
            hoff, toff, aoff, scale, bias, y, pred, correct)``.

    Returns:
        int64 array (M,).
    """
    mv = _move_arrays(moves)
    out = np.zeros(len(moves), np.int64)
    if len(moves):
        n = state[18].shape[0]
        _evaluate(len(moves) * n * 8, *mv, *state, out)
    return out


def commit_moves(moves, state, wrong: int) -> np.ndarray:
    """Apply ``moves`` in order to the state (in place). ``wrong`` is the current number of
    misclassified samples; returns the number after each move, int64 (M,)."""
    mv = _move_arrays(moves)
    out = np.zeros(len(moves), np.int64)
    if len(moves):
        _commit(*mv, *state, np.int64(wrong), out)
    return out
