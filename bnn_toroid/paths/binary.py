r"""Paths between binary networks: random flip orders and the single bend (docs/methods.md, "Random flip orders" and "Single bend (binary)").

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038), §4: in
Hamming space there is no unique geodesic, so two aligned binary networks are joined by
flipping the weights where they differ one at a time, in a random order, and averaging
the error curves over several orders. The single-bend path goes through a midpoint that
starts at equal Hamming distance from both ends and is trained with BinaryNet SGD.

A path here is an order of the *elementary moves* of :mod:`bnn_toroid.paths.moves`
(weight flips, plus threshold steps, output-affine and pool-mode moves when those differ),
so its end is exactly ``b``. ``fractions`` counts moves: point ``i`` is the network after
the first ``k_i = round(i · T / (points − 1))`` of the ``T`` moves (points repeat when
``T < points − 1``); ``hamming`` counts weights only.
"""
from __future__ import annotations

import numpy as np

from ..geometry.binary import distance
from ._common import aligned_endpoint, point_ks
from ..network import BinaryNetwork, Conv2d, Dense, MaxPool2d
from .base import Path
from .moves import (_fan_in_parity, _real_layer, apply_moves, as_xy, check_pair, errors_along,
                    moves_between)
from ..network.recalibrate import infer_records
from .recompute import check_bn, errors_recomputed

__all__ = ["FlipPath", "SingleBendPath", "random_flip", "single_bend", "midpoint_start",
           "to_torch"]


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


class FlipPath(Path):
    r"""The moves from ``a`` to ``b`` (aligned) applied in random orders.

    Attributes:
        a, b: the endpoints (``point(0)`` is ``a``, ``point(-1)`` is ``b``, exactly).
        moves: the elementary moves (:func:`~bnn_toroid.paths.moves.moves_between`).
        orders: (n_orders, n_moves) permutations of ``moves``; ``order`` = the first one
            applied, as a moves array (what :meth:`point` follows).
        fractions: ``k_i / n_moves`` (the move axis).
        hamming: Hamming distance of the endpoints, a fraction of all weights (docs/methods.md, "Hamming distance").
        n_moves: number of moves.
    """

    def __init__(self, a, b, moves, orders, points, bn="frozen", bn_data=None):
        self.a, self.b = a, b
        self.bn, self.bn_data = bn, bn_data
        self.moves = moves
        self.orders = np.asarray(orders, np.int64).reshape(len(orders), len(moves))
        self.order = moves[self.orders[0]]
        self.n_moves = len(moves)
        self.points = int(points)
        self._ks = point_ks(self.n_moves, self.points)
        self.fractions = self._ks / max(self.n_moves, 1)
        self.hamming = distance(a, b)

    def __repr__(self):
        return (f"FlipPath(moves={self.n_moves}, hamming={self.hamming:.4f}, points={len(self)}, "
                f"orders={len(self.orders)}, bn={self.bn!r})")

    def point(self, i: int) -> BinaryNetwork:
        """The network after the first ``k_i`` moves of the first order."""
        j = self._index(i)
        if j == 0:
            return self.a
        if j == len(self) - 1:
            return self.b
        return apply_moves(self.a, self.order[:self._ks[j]])

    def errors_per_order(self, data) -> np.ndarray:
        r"""Train error ``E(θ_{k_i})`` at every point for every order, (n_orders, points).

        The networks are built on packed parameters and evaluated in batched
        :class:`~bnn_toroid.network.NetworkStack` calls (:func:`~bnn_toroid.paths.moves.errors_along`);
        the endpoints, shared by all orders, are evaluated once."""
        x, y = as_xy(data)
        out = np.empty((len(self.orders), len(self)))
        if self.bn == "recompute":
            stats = (x, y) if self.bn_data is None else self.bn_data
            for r, perm in enumerate(self.orders):
                out[r] = errors_recomputed(self.a, self.b, self.moves[perm], self._ks, (x, y), stats)
            return out
        ends = errors_along(self.a, self.moves, [0, self.n_moves], (x, y))
        inner = slice(1, len(self) - 1)
        for r, perm in enumerate(self.orders):
            if len(self) > 2:
                out[r, inner] = errors_along(self.a, self.moves[perm], self._ks[inner], (x, y))
            out[r, 0], out[r, -1] = ends
        return out

    def errors(self, data) -> np.ndarray:
        r"""Train error at every point, averaged over the orders (Pittorino et al. 2022, §4):
        ``E_i = (1/R) Σ_r E(θ^{(r)}_{k_i})``. With ``bn="recompute"`` every point's
        thresholds are first re-estimated on ``bn_data`` (default: ``data``)."""
        return self.errors_per_order(data).mean(axis=0)


def random_flip(a, b, points: int = 21, seed: int = 0, align=True, orders: int = 1,
                bn: str = "frozen", bn_data=None) -> FlipPath:
    r"""Random-order binary path from ``a`` to ``b`` (Pittorino et al. 2022, §4; docs/methods.md, "Random flip orders").

    ``b`` is first aligned to ``a`` (``align=True``: :func:`bnn_toroid.symmetry.binary.align`,
    method ``"overlap"``; a string picks the method; ``False`` keeps ``b``). The path
    applies every elementary move (:mod:`bnn_toroid.paths.moves`) in a random order drawn
    from ``numpy.random.default_rng(seed)``; ``orders > 1`` draws several orders and
    :meth:`FlipPath.errors` averages their curves (:meth:`FlipPath.errors_per_order` keeps them).

    Args:
        a, b: frozen :class:`BinaryNetwork` s of one architecture. A torch model raises a
            TypeError: freeze it with ``BinaryNetwork.from_torch(model.eval())``.
        points: points on the path, endpoints included (>= 2).
        bn: ``"frozen"`` (each point's thresholds follow the threshold moves) or
            ``"recompute"``: every point's thresholds are re-estimated from its
            pre-activation statistics on ``bn_data`` (default: the data the errors are
            measured on), with the BatchNorm records interpolated between the ends
            (:mod:`bnn_toroid.paths.recompute`).
    """
    points = _check_int("random_flip: points", points, 2)
    orders = _check_int("random_flip: orders", orders, 1)
    bn = check_bn(bn, "random_flip")
    a, b = check_pair(a, b)
    b = aligned_endpoint(a, b, align)
    moves = moves_between(a, b)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(moves)) for _ in range(orders)]
    return FlipPath(a, b, moves, perms, points, bn, bn_data)


# ---------------------------------------------------------------------------------------
# Single bend
# ---------------------------------------------------------------------------------------

class SingleBendPath(Path):
    """Two random-flip paths, ``a → midpoint`` and ``midpoint → b``, joined at fraction 0.5.

    ``fractions`` maps the first half's move fractions to [0, 0.5] and the second's to
    [0.5, 1]; the midpoint appears once (``2·points − 1`` points).

    Attributes:
        midpoint: the trained midpoint; ``midpoint_start`` the untrained one.
        first, second: the two :class:`FlipPath` s. ``history``: the training History.
        hamming: Hamming distance a–b; ``hamming_a_mid``, ``hamming_mid_b``: to the midpoint.
        n_moves: moves along both halves.
    """

    _hamming = staticmethod(distance)  # residual networks: over their binary weights

    def __init__(self, a, b, midpoint, midpoint_start, first, second, history):
        self.a, self.b = a, b
        self.midpoint, self.midpoint_start = midpoint, midpoint_start
        self.first, self.second = first, second
        self.history = history
        self.fractions = np.concatenate([0.5 * first.fractions, 0.5 + 0.5 * second.fractions[1:]])
        self.hamming = self._hamming(a, b)
        self.hamming_a_mid = first.hamming
        self.hamming_mid_b = second.hamming
        self.n_moves = first.n_moves + second.n_moves

    def __repr__(self):
        return (f"SingleBendPath(hamming={self.hamming:.4f}, a-mid={self.hamming_a_mid:.4f}, "
                f"mid-b={self.hamming_mid_b:.4f}, points={len(self)})")

    def point(self, i: int) -> BinaryNetwork:
        j = self._index(i)
        n1 = len(self.first)
        return self.first.point(j) if j < n1 else self.second.point(j - n1 + 1)

    def errors(self, data) -> np.ndarray:
        """Train error at every point: the first half's curve, then the second's (the
        midpoint once)."""
        return np.concatenate([self.first.errors(data), self.second.errors(data)[1:]])


def _mid_threshold(ta, tb, n, real):
    if real or ta.dtype.kind == "f" or tb.dtype.kind == "f":
        return (ta.astype(np.float64) + tb.astype(np.float64)) / 2
    mid = (ta.astype(np.float64) + tb) / 2
    if n is None:
        return np.floor(mid + 0.5).astype(np.int64)
    # nearest value of the fan-in's parity (the canonical levels, docs/methods.md, "Canonical thresholds (parity)")
    return (np.floor((mid - n) / 2 + 0.5) * 2 + n).astype(np.int64)


def midpoint_start(a: BinaryNetwork, b: BinaryNetwork, seed: int = 0) -> BinaryNetwork:
    r"""The single bend's starting midpoint (docs/methods.md, "Single bend (binary)"): ``a`` with a random half
    (``⌊d/2⌋`` of the ``d`` differing weights, drawn from ``default_rng(seed)``) of the
    weights where ``a`` and ``b`` differ set to ``b``'s, so it lies at Hamming distance
    ``⌊d/2⌋`` and ``⌈d/2⌉`` from the ends. Thresholds are the ends' mean rounded to the
    nearest value of the fan-in's parity (integer), or the mean (real-input layer); output
    scale from ``a``, output bias the mean; pool modes from ``a``."""
    a, b = check_pair(a, b)
    rng = np.random.default_rng(seed)
    idx = [(i, j) for i in a.weight_layers()
           for j in np.flatnonzero(a.layers[i].weights.reshape(-1) != b.layers[i].weights.reshape(-1))]
    take = rng.permutation(len(idx))[:len(idx) // 2]
    chosen = {}
    for t in take:
        i, j = idx[t]
        chosen.setdefault(i, []).append(j)
    layers = []
    for i, (la, lb) in enumerate(zip(a.layers, b.layers)):
        if isinstance(la, MaxPool2d):
            layers.append(MaxPool2d(la.size, la.stride, None if la.min_channels is None
                                    else la.min_channels.copy()))
            continue
        w = la.weights.copy()
        sel = np.asarray(chosen.get(i, []), np.int64)
        w.reshape(-1)[sel] = lb.weights.reshape(-1)[sel]
        if la.threshold is not None:
            kw = dict(threshold=_mid_threshold(la.threshold, lb.threshold, _fan_in_parity(a, i),
                                               _real_layer(a, i)))
        else:
            kw = dict(out_scale=la.out_scale.copy(), out_bias=(la.out_bias + lb.out_bias) / 2)
        if isinstance(la, Dense):
            layers.append(Dense(w, **kw))
        else:
            layers.append(Conv2d(w, stride=la.stride, padding=la.padding, pad_value=la.pad_value, **kw))
    return a.with_layers(layers)


def to_torch(net: BinaryNetwork, x=None):
    r"""A trainable torch model computing the same function as ``net`` (for BinaryNet SGD).

    Each weight layer becomes :class:`~bnn_toroid.nn.BinaryLinear` /
    :class:`~bnn_toroid.nn.BinaryConv2d` with latent weights ``0.5 · w`` (so ``sign``
    gives back ``w``) and bias ``−T + 0.5`` on integer pre-activations, since for integer
    ``h`` ``sign(h − T + 0.5) = +1 ⇔ h ≥ T`` (docs/methods.md, "Integer threshold form"); a real-input first layer gets
    ``−T``. A fixed ``Scale(1/(√n·rms))`` (fan-in ``n``; ``rms`` of ``x`` for a real-input
    layer, else 1) before each ``Sign`` leaves the function unchanged and widens the
    straight-through window ``|·| ≤ 1`` to about one standard deviation of ``h``, so the
    thresholds and weights get gradients. The output layer's bias ``out_bias / s`` and ``Scale(s)`` reproduce the
    logits ``s·h + out_bias``; that bias is frozen (not a parameter of the training).

    Args:
        net: the network. x: optional training inputs (for the real-input ``rms``).

    Returns:
        ``(model, x_order)``: the ``nn.Sequential`` and a function that puts raw samples
        in the order the model reads (flattened NHWC features for dense models, NCHW
        images for conv models).

    Raises:
        NotImplementedError: min-pooled channels (no torch module pools with min per
            channel), ``input_scale``, per-channel pad values, or an output scale that is
            not one positive constant (an output BatchNorm).
    """
    import torch
    from torch import nn

    from .. import nn as bnn

    if any(isinstance(l, MaxPool2d) and l.min_channels is not None and l.min_channels.any()
           for l in net.layers):
        raise NotImplementedError("single_bend: networks with min-pooled channels (a negative "
                                  "BatchNorm scale after a pool) cannot be trained as torch models yet")
    if net.input_scale is not None:
        raise NotImplementedError("single_bend: networks with input_scale are not supported")
    out = net.layers[-1]
    s = out.out_scale
    if not (np.all(s == s[0]) and s[0] > 0):
        raise NotImplementedError("single_bend: the output layer needs one positive out_scale for "
                                  f"all units (got {s}); per-unit output affines are not supported")
    conv = any(isinstance(l, Conv2d) for l in net.layers)
    mods = [] if conv else [nn.Flatten()]
    if net.binarize_input:
        mods.append(bnn.Sign())
    for i, layer in enumerate(net.layers):
        geom = net.layer_input_shape(i)
        last = i == len(net.layers) - 1
        if isinstance(layer, MaxPool2d):
            mods.append(nn.MaxPool2d(layer.size, layer.stride))
            mods.append(bnn.Sign())
            continue
        if isinstance(layer, Dense):
            w = layer.weights.astype(np.float32)
            if len(geom) == 3:  # torch flattens CHW; our features are HWC
                h_, w_, c_ = geom
                w = w.reshape(-1, h_, w_, c_).transpose(0, 3, 1, 2).reshape(len(w), -1)
                mods.append(nn.Flatten())
            m = bnn.BinaryLinear(w.shape[1], w.shape[0], bias=True)
        else:
            pv = np.asarray(layer.pad_value, np.float64)
            if pv.ndim or float(pv) not in (0.0, 1.0):
                raise NotImplementedError("single_bend: conv pad values other than 0 or 1 are not supported")
            f, kh, kw, c = layer.weights.shape
            w = layer.weights.astype(np.float32).transpose(0, 3, 1, 2)
            m = bnn.BinaryConv2d(c, f, (kh, kw), stride=layer.stride, padding=layer.padding,
                                 pad_value=float(pv), bias=True)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(0.5 * w)))
            if last:
                m.bias.copy_(torch.from_numpy((out.out_bias / s[0]).astype(np.float32)))
            else:
                t = layer.threshold.astype(np.float64)
                m.bias.copy_(torch.from_numpy((-t if _real_layer(net, i) else -t + 0.5).astype(np.float32)))
        if last:
            m.bias.requires_grad_(False)
        mods.append(m)
        if last:
            mods.append(bnn.Scale(float(s[0])))
            continue
        mods.append(bnn.Scale(_ste_scale(net, i, x)))
        if not (i + 1 < len(net.layers) and isinstance(net.layers[i + 1], MaxPool2d)):
            mods.append(bnn.Sign())
    model = nn.Sequential(*mods)

    def x_order(x):
        x = np.asarray(x)
        n = x.shape[0]
        if net.input_layout == "NCHW":
            return x if conv else x.transpose(0, 2, 3, 1).reshape(n, -1)
        if net.input_layout == "NHWC":
            return x.transpose(0, 3, 1, 2) if conv else x.reshape(n, -1)
        return x.reshape(n, -1)

    return model, x_order


def _ste_scale(net, i, x):
    # sign(c·(h − T')) = sign(h − T') for c > 0, but the straight-through window
    # |c·(h − T')| <= 1 then spans ~one standard deviation of h instead of one integer
    fan = int(np.prod(net.layers[i].weights.shape[1:]))
    rms = 1.0
    if _real_layer(net, i) and x is not None:
        rms = max(float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64))))), 1e-12)
    return 1.0 / (np.sqrt(fan) * rms)


def _freeze_like(model, template: BinaryNetwork) -> BinaryNetwork:
    conv = any(isinstance(l, Conv2d) for l in template.layers)
    if conv:
        h, w, c = template.layer_input_shape(0)
        frozen = BinaryNetwork.from_torch(model.eval(), input_shape=(c, h, w), input_layout="NCHW")
    else:
        frozen = BinaryNetwork.from_torch(model.eval(), input_shape=(template.layers[0].weights.shape[1],))
    layers = list(frozen.layers)
    out, ref = layers[-1], template.layers[-1]
    # the output affine was not trained: keep it exact rather than its float32 round trip
    layers[-1] = Dense(out.weights, out_scale=ref.out_scale.copy(), out_bias=ref.out_bias.copy())
    return template.with_layers(layers)


def single_bend(a, b, data, epochs: int = 20, lr=None, seed: int = 0, points: int = 21,
                align=True, batch_size: int = 128, quiet: bool = True, orders: int = 1,
                bn: str = "frozen", bn_data=None) -> SingleBendPath:
    r"""Single-bend binary path (docs/methods.md, "Single bend (binary)"; Pittorino et al. 2022, §4): ``a → m → b``.

    1. ``b`` is aligned to ``a`` (as in :func:`random_flip`).
    2. The midpoint starts at equal Hamming distance from both ends
       (:func:`midpoint_start`).
    3. It is trained on ``data`` with BinaryNet SGD (:func:`bnn_toroid.train.fit`,
       ``method="sgd"``, ``optimizer="sgd"``: Nesterov momentum, cosine learning rate
       from ``lr`` (default 10), STE, latent weights clipped to [−1, 1]) from latent
       weights ``±0.5`` (:func:`to_torch`), then frozen with
       :meth:`BinaryNetwork.from_torch`.
    4. The path is ``random_flip(a, m)`` followed by ``random_flip(m, b)``, ``points``
       points on each half (seeds ``seed`` and ``seed + 1``). ``bn="recompute"`` as in
       :func:`random_flip`; the midpoint (trained without BatchNorm) gets the record
       recovered from its thresholds on ``bn_data``
       (:func:`~bnn_toroid.network.recalibrate.infer_records`).

    Raises:
        NotImplementedError: networks :func:`to_torch` cannot express (min-pooled channels,
            input_scale, per-unit output affines).
    """
    from ..train import fit

    points = _check_int("single_bend: points", points, 2)
    bn = check_bn(bn, "single_bend")
    a, b = check_pair(a, b)
    x, y = as_xy(data)
    b = aligned_endpoint(a, b, align)
    m0 = midpoint_start(a, b, seed)
    model, x_order = to_torch(m0, x)
    # The midpoint's latent weights start at ±0.5 and its thresholds are biases in units
    # of h: plain SGD at a large rate moves both (measured in docs/binary_landscape.md).
    history = fit(model, (x_order(x), y), method="sgd", epochs=epochs,
                  lr=10.0 if lr is None else lr, optimizer="sgd", seed=seed,
                  batch_size=batch_size, quiet=quiet)
    mid = _freeze_like(model, m0)
    if bn == "recompute":
        mid = infer_records(mid, (x, y) if bn_data is None else bn_data)
    first = random_flip(a, mid, points=points, seed=seed, align=False, orders=orders, bn=bn, bn_data=bn_data)
    second = random_flip(mid, b, points=points, seed=seed + 1, align=False, orders=orders, bn=bn,
                         bn_data=bn_data)
    return SingleBendPath(a, b, mid, m0, first, second, history)
