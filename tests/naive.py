"""Naive twins of the higher-level algorithms (the stumpy habit): slow, obvious, and written
from the definitions without the package's machinery, so the fast versions can be tested
against them (tests/test_naive.py). tests/reference.py holds the kernels' twins.

Binary networks here are dense MLPs on binarised input (``BinaryNetwork`` of ``Dense``
layers, ``binarize_input=True``), evaluated with numpy integers: ``s_0 = sign(x)``
(``x >= 0`` is +1), a hidden unit fires ``+1`` iff ``h = w·s >= T``, the logits are
``out_scale·h + out_bias`` and the class is their first argmax. Real-valued networks are
``nn.Sequential`` MLPs ``Flatten (Linear ReLU)* Linear`` run through torch one copy at a
time.
"""
import copy
import itertools

import numpy as np
import torch

from bnn_toroid.network import BinaryNetwork, Dense


# ----------------------------------------------------------------- binary networks

def _dense_only(net):
    assert isinstance(net, BinaryNetwork) and net.binarize_input and net.input_scale is None
    assert all(isinstance(l, Dense) for l in net.layers), "naive twins take dense MLPs"


def params(net):
    """Per layer a dict of writable copies: ``w`` (int64), ``T`` (hidden) or
    ``scale``/``bias`` (output)."""
    _dense_only(net)
    out = []
    for l in net.layers:
        p = {"w": l.weights.astype(np.int64)}
        if l.threshold is not None:
            p["T"] = np.array(l.threshold, copy=True)
        else:
            p["scale"], p["bias"] = l.out_scale.copy(), l.out_bias.copy()
        out.append(p)
    return out


def build(net, ps):
    """A BinaryNetwork of ``net``'s architecture from :func:`params`-style arrays."""
    layers = [Dense(p["w"], threshold=p.get("T"), out_scale=p.get("scale"), out_bias=p.get("bias"))
              for p in ps]
    return BinaryNetwork(layers, net.input_shape, binarize_input=True)


def logits(ps, x):
    s = np.where(np.asarray(x).reshape(len(x), -1) >= 0, 1, -1).astype(np.int64)
    for p in ps:
        h = s @ p["w"].T
        if "T" in p:
            s = np.where(h >= p["T"], 1, -1)
        else:
            return p["scale"] * h + p["bias"]
    raise AssertionError("no output layer")


def error(ps, x, y) -> float:
    """Fraction of samples whose first argmax of the logits is not ``y``."""
    return float(np.mean(logits(ps, x).argmax(axis=1) != np.asarray(y)))


def hamming(pa, pb) -> float:
    """Fraction of all weights that differ."""
    diff = sum(int((a["w"] != b["w"]).sum()) for a, b in zip(pa, pb))
    return diff / sum(a["w"].size for a in pa)


def act(ps, i, perm, flip):
    """The symmetry of hidden layer ``i``: new unit ``k`` is old unit ``perm[k]``, sign
    reversed where ``flip[k]``: its row and outgoing column negated and ``T -> 1 - T``
    (``h >= T  <=>  not (−h >= 1 − T)`` for integer ``h``). Returns new arrays."""
    ps = copy.deepcopy(ps)
    sign = np.where(flip, -1, 1)
    layer, nxt = ps[i], ps[i + 1]
    layer["w"] = layer["w"][perm] * sign[:, None]
    t = layer["T"][perm]
    layer["T"] = np.where(flip, 1 - t, t)
    nxt["w"] = nxt["w"][:, perm] * sign[None, :]
    return ps


def binary_orbit(ps):
    """Every network of the symmetry group of a dense MLP (all permutations and sign
    reversals of every hidden layer), as :func:`params`-style arrays."""
    hidden = [i for i, p in enumerate(ps) if "T" in p]
    choices = []
    for i in hidden:
        n = ps[i]["w"].shape[0]
        choices.append([(p, np.array(f, bool)) for p in itertools.permutations(range(n))
                        for f in itertools.product((False, True), repeat=n)])
    for combo in itertools.product(*choices):
        out = ps
        for i, (perm, flip) in zip(hidden, combo):
            out = act(out, i, np.array(perm), flip)
        yield out


def best_binary_alignment(net, reference):
    """Brute force: the member of ``net``'s symmetry orbit nearest to ``reference`` in
    Hamming distance, as ``(distance, arrays)`` (the first of equals in orbit order)."""
    pr = params(reference)
    best = None
    for ps in binary_orbit(params(net)):
        d = hamming(pr, ps)
        if best is None or d < best[0]:
            best = (d, ps)
    return best


def flip_picks(net, eps, samples, seed):
    """The weights flipped by ``landscape.binary.local_energy``'s draws: draw ``s·len(eps) + j``
    flips ``round(eps[j]·N)`` weights, chosen by ``rng.choice(N, m, replace=False)`` on
    ``numpy.random.default_rng(seed)`` over the flat indices of all weights (weight
    layers in order, each C order), draws in that order (none for ``m = 0``). This is the
    fast version's contract for its random numbers; the rest is what the naive code does
    with them."""
    rng = np.random.default_rng(seed)
    n = net.n_weights
    counts = np.rint(np.tile(np.asarray(eps, np.float64), samples) * n).astype(np.int64)
    return [rng.choice(n, size=int(m), replace=False) if m else np.zeros(0, np.int64)
            for m in counts]


def binary_local_energy(net, data, eps, samples, seed):
    """δE by re-evaluating every perturbed copy from scratch: ``(base, errors (samples,
    len(eps)), mean, std)`` with ``mean = mean over draws of (E − E_0)`` and ``std`` the
    (ddof 0) standard deviation of the perturbed errors."""
    x, y = data
    ps = params(net)
    base = error(ps, x, y)
    sizes = [p["w"].size for p in ps]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    errors = []
    for picks in flip_picks(net, eps, samples, seed):
        q = copy.deepcopy(ps)
        for k in picks:
            i = int(np.searchsorted(offsets, k, side="right") - 1)
            q[i]["w"].reshape(-1)[k - offsets[i]] *= -1
        build(net, q)  # the perturbed copy is a valid network
        errors.append(error(q, x, y))
    errors = np.array(errors).reshape(samples, len(eps))
    return base, errors, (errors - base).mean(axis=0), errors.std(axis=0)


def apply_move(ps, move):
    """One elementary move (paths/moves.py's table) on :func:`params`-style arrays, in place."""
    from bnn_toroid.paths.moves import FLIP, OUTPUT, THRESHOLD, THRESHOLD_SET
    p = ps[int(move["layer"])]
    k, i = int(move["kind"]), int(move["index"])
    if k == FLIP:
        p["w"].reshape(-1)[i] *= -1
    elif k == THRESHOLD:
        p["T"][i] += move["delta"]
    elif k == THRESHOLD_SET:
        p["T"][i] = move["value"]
    elif k == OUTPUT:
        p["scale"][i], p["bias"][i] = move["value"], move["value2"]
    else:
        raise AssertionError(f"move kind {k} is not in dense MLPs")


def errors_along(a, order, data):
    """Train error after every move of ``order`` from ``a`` (``len(order) + 1`` values),
    each intermediate network rebuilt and evaluated from scratch."""
    x, y = data
    ps = params(a)
    out = [error(ps, x, y)]
    for mv in order:
        apply_move(ps, mv)
        out.append(error(params(build(a, ps)), x, y))
    return np.array(out)


def barrier(errors):
    """``(max_error, height, argmax)`` of an error curve: ``max E``, ``max E − (E_0 + E_T)/2``
    and the first index of the maximum."""
    e = list(errors)
    top = max(e)
    return top, top - 0.5 * (e[0] + e[-1]), e.index(top)


# ----------------------------------------------------------- real-valued networks

def linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def permute_real(model, perms):
    """A copy with hidden layer ``l``'s units reordered by ``perms[l]`` (new unit ``k`` is
    old unit ``perms[l][k]``): rows and bias of layer ``l``, columns of layer ``l+1``."""
    m = copy.deepcopy(model)
    ls = linears(m)
    with torch.no_grad():
        for l, p in enumerate(perms):
            p = torch.as_tensor(np.asarray(p))
            ls[l].weight.copy_(ls[l].weight[p])
            ls[l].bias.copy_(ls[l].bias[p])
            ls[l + 1].weight.copy_(ls[l + 1].weight[:, p])
    return m


def real_orbit(model):
    """``(perms, model)`` for every permutation of every hidden layer."""
    sizes = [l.out_features for l in linears(model)[:-1]]
    for perms in itertools.product(*(itertools.permutations(range(n)) for n in sizes)):
        yield [np.array(p) for p in perms], permute_real(model, perms)


def euclidean(a, b) -> float:
    """``‖Θ_a − Θ_b‖ / sqrt(N)`` over all parameters."""
    pa = torch.cat([p.detach().reshape(-1).double() for p in a.parameters()])
    pb = torch.cat([p.detach().reshape(-1).double() for p in b.parameters()])
    return float((pa - pb).norm() / np.sqrt(pa.numel()))


def best_real_alignment(model, reference):
    """Brute force over all permutations: the smallest ``euclidean(reference, π(model))``,
    as ``(distance, perms)``."""
    best = None
    for perms, m in real_orbit(model):
        d = euclidean(reference, m)
        if best is None or d < best[0]:
            best = (d, perms)
    return best


@torch.no_grad()
def real_error(model, x, y) -> float:
    model = model.eval()
    x = torch.as_tensor(np.asarray(x)).to(next(model.parameters()).dtype)
    return float((model(x).argmax(1) != torch.as_tensor(np.asarray(y))).double().mean())


def real_local_energy(model, data, sigma, samples, seed, chunk):
    """δE by evaluating every perturbed copy ``w + σ z ⊙ w`` on its own. The draws ``z``
    follow ``landscape.continuous.local_energy``'s contract: a ``torch.Generator`` seeded
    with ``seed``; per chunk of ``k = min(chunk, samples left)`` draws, for every
    parameter in ``named_parameters()`` order, ``randn((k, *shape), float64)`` cast to the
    parameter's dtype; the same ``z`` for every σ. Returns ``(base, errors (samples,
    len(sigma)), mean, std)`` (std with ddof 1)."""
    x, y = data
    base = real_error(model, x, y)
    gen = torch.Generator().manual_seed(int(seed))
    named = dict(model.named_parameters())
    errors = np.zeros((samples, len(sigma)))
    for s0 in range(0, samples, chunk):
        k = min(chunk, samples - s0)
        z = {n: torch.randn((k,) + tuple(p.shape), generator=gen, dtype=torch.float64).to(p.dtype)
             for n, p in named.items()}
        for r in range(k):
            for j, s in enumerate(sigma):
                c = copy.deepcopy(model)
                with torch.no_grad():
                    for n, p in c.named_parameters():
                        p.copy_(named[n] + float(s) * z[n][r] * named[n])
                errors[s0 + r, j] = real_error(c, x, y)
    return base, errors, (errors - base).mean(axis=0), errors.std(axis=0, ddof=1)


# ----------------------------------------------------------------- residual binary networks
# One network at a time, one output pixel at a time, straight from the definitions in
# bnn_toroid/network/residual_ops.py: sign(0) = +1, padded taps of a binary convolution
# read pad_value (0 adds nothing), max pools ignore padded taps, average pools count only
# the taps inside the map. The package's float64 reference (network/residual_eval.py) and
# its packed-kernel path (network/residual_fast.py) are tested against this.

def _res_pads(padding, h, w, kh, kw, sy, sx):
    from bnn_toroid.network.residual_ops import resolve_pads
    return resolve_pads(padding, h, w, kh, kw, sy, sx)


def _res_window_conv(x, kh, kw, sy, sx, pads, fill, fn):
    """Slide over x (H, W, C) padded with ``fill``; fn(window (kh, kw, C), inside mask)."""
    t, b, l, r = pads
    h, w = x.shape[:2]
    ho, wo = (h + t + b - kh) // sy + 1, (w + l + r - kw) // sx + 1
    rows = []
    for oy in range(ho):
        row = []
        for ox in range(wo):
            win = np.full((kh, kw, x.shape[2]), fill, dtype=np.float64)
            inside = np.zeros((kh, kw), bool)
            for dy in range(kh):
                for dx in range(kw):
                    yy, xx = oy * sy - t + dy, ox * sx - l + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        win[dy, dx] = x[yy, xx]
                        inside[dy, dx] = True
            row.append(fn(win, inside))
        rows.append(row)
    return np.array(rows, dtype=np.float64)


def _res_op(op, x, ws, sums):
    from bnn_toroid.network import residual_ops as R
    if isinstance(op, R.Residual):
        b = x
        for o in op.body:
            b = _res_op(o, b, ws, sums)
        s = x
        for o in op.shortcut:
            s = _res_op(o, s, ws, sums)
        return b + s
    if isinstance(op, R.BinaryConv):
        w = np.asarray(ws.pop(0), np.int64)
        f, kh, kw, c = w.shape
        pads = _res_pads(op.padding, x.shape[0], x.shape[1], kh, kw, *op.stride)
        sgn = np.where(x >= 0, 1, -1)
        h = _res_window_conv(sgn, kh, kw, *op.stride, pads, op.pad_value,
                             lambda win, ins: [int((win * w[j]).sum()) for j in range(f)])
        sums.append(h.astype(np.int64))
        return h * (1.0 if op.scale is None else op.scale)
    if isinstance(op, R.RealConv):
        f, kh, kw, cg = op.weights.shape
        pads = _res_pads(op.padding, x.shape[0], x.shape[1], kh, kw, *op.stride)
        fg = f // op.groups

        def conv(win, ins):
            return [float((win[:, :, (j // fg) * cg:(j // fg + 1) * cg] * op.weights[j]).sum())
                    for j in range(f)]
        y = _res_window_conv(x, kh, kw, *op.stride, pads, 0.0, conv)
        return y if op.bias is None else y + op.bias
    if isinstance(op, R.Affine):
        return x * op.scale + op.shift
    if isinstance(op, R.ReLU):
        return np.maximum(x, 0.0)
    if isinstance(op, R.PReLU):
        return np.where(x >= 0, x, x * op.slope)
    if isinstance(op, (R.MaxPool, R.AvgPool)):
        kh, kw = op.size
        pads = _res_pads(op.padding, x.shape[0], x.shape[1], kh, kw, *op.stride)
        if isinstance(op, R.MaxPool):
            return _res_window_conv(x, kh, kw, *op.stride, pads, 0.0,
                                    lambda win, ins: win[ins].max(axis=0))
        return _res_window_conv(x, kh, kw, *op.stride, pads, 0.0,
                                lambda win, ins: win[ins].mean(axis=0))
    if isinstance(op, R.GlobalAvgPool):
        return x.mean(axis=(0, 1))
    if isinstance(op, R.RealDense):
        y = op.weights @ x.reshape(-1)
        return y if op.bias is None else y + op.bias
    raise TypeError(type(op).__name__)


def residual_logits(net, x, weights=None):
    """(logits (S, N, classes), integer sums per binary convolution as lists over S of
    lists over N) of a ResidualBinaryNetwork on samples ``x`` in its input layout, one
    network and one sample at a time."""
    x = np.asarray(x, np.float64)
    if net.input_layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    weights = [net.binary_weights()] if weights is None else weights
    out, all_sums = [], []
    for ws in weights:
        rows, sums_s = [], []
        for xi in x:
            left, sums = list(ws), []
            y = xi
            for op in net.ops:
                y = _res_op(op, y, left, sums)
            rows.append(y)
            sums_s.append(sums)
        out.append(rows)
        all_sums.append(sums_s)
    return np.array(out, dtype=np.float64), all_sums
