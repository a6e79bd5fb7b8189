r"""Thresholds re-estimated from data: the binary analogue of recomputing BatchNorm
statistics (REPAIR, Jordan et al., ICLR 2023; ``bn="recompute"`` on continuous paths).

A frozen network's hidden thresholds fold the BatchNorm statistics it was trained with.
A network between two minima (a point of a path) has other pre-activation statistics,
and its stale thresholds can make it look worse than it is. :func:`recalibrate` recomputes
the statistics on data, layer after layer, and rebuilds each threshold from the layer's
:class:`~bnn_toroid.network.layers.BatchNormRecord` (docs/methods.md, "Thresholds
re-estimated along paths").
"""
from __future__ import annotations

import numpy as np

from .core import BinaryNetwork
from .layers import Conv2d, Dense, MaxPool2d, NetworkError

__all__ = ["recalibrate", "can_recalibrate", "infer_records", "interpolate_records", "with_records"]


def can_recalibrate(net: BinaryNetwork) -> bool:
    """True if some hidden layer of ``net`` carries a BatchNorm record."""
    return any(getattr(l, "bn", None) is not None for l in net.layers)


def _pooled(h, pool: MaxPool2d):
    """Max-pool (min where ``min_channels``) of NHWC pre-activations, valid windows."""
    n, hh, ww, c = h.shape
    s, k = pool.stride, pool.size
    ho, wo = (hh - k) // s + 1, (ww - k) // s + 1
    mx = mn = None
    for di in range(k):
        for dj in range(k):
            v = h[:, di:di + s * (ho - 1) + 1:s, dj:dj + s * (wo - 1) + 1:s, :]
            mx = v if mx is None else np.maximum(mx, v)
            mn = v if mn is None else np.minimum(mn, v)
    if pool.min_channels is not None and pool.min_channels.any():
        return np.where(pool.min_channels, mn, mx)
    return mx


def _moments(net, i, x, batch_size):
    """Mean and (population) variance per unit of layer i's pre-activations on x, pooled
    first when its record says so; accumulated in float64 batch by batch."""
    layer = net.layers[i]
    pool = net.layers[i + 1] if layer.bn.after_pool else None
    if layer.bn.after_pool and not isinstance(pool, MaxPool2d):
        raise NetworkError(f"recalibrate: layer {i}'s BatchNorm record says 'after pool' but "
                           "no MaxPool2d follows it")
    n_units = layer.units
    s1, s2, count = np.zeros(n_units), np.zeros(n_units), 0
    idx = net.weight_layers().index(i)
    for b in range(0, len(x), batch_size):
        h = net.preactivations(x[b:b + batch_size])[idx].astype(np.float64)
        if pool is not None:
            h = _pooled(h, pool)
        h = h.reshape(-1, n_units)
        s1 += h.sum(0)
        s2 += (h * h).sum(0)
        count += h.shape[0]
    mean = s1 / count
    return mean, np.maximum(s2 / count - mean * mean, 0.0)


def recalibrate(net: BinaryNetwork, data, batch_size: int = 4096,
                max_samples: int | None = None) -> BinaryNetwork:
    r"""``net`` with every hidden threshold that has a BatchNorm record re-estimated on
    ``data`` (a Dataset, an ``(x, y)`` pair or an input array), in layer order.

    For layer ``l`` (the layers below already recalibrated) the mean ``μ`` and variance
    ``σ²`` of each unit's pre-activation ``h`` over the samples (and positions, for a
    convolution; after the pool when the record says so) give

    .. math:: T = \left\lceil \mu - \sqrt{\sigma^2 + \varepsilon_h}\;\rho \right\rceil

    (not rounded on real-valued input), clipped to ``±(K + 1)`` for fan-in ``K``; a
    unit with ``ρ = ±∞`` stays constant. On the data the network was trained on, with its
    own weights, this reproduces its thresholds up to the difference between the running
    statistics of training and the full-data statistics. Layers without a record keep
    their thresholds. Returns a new network; ``net`` is unchanged.

    Re-estimating BatchNorm statistics at every point of a path between two networks is
    the practice of Garipov et al. (NeurIPS 2018, "Loss surfaces, mode connectivity, and
    fast ensembling of DNNs"); here it acts on the folded integer thresholds.
    """
    if not isinstance(net, BinaryNetwork):
        raise TypeError(f"recalibrate: expected a BinaryNetwork, got {type(net).__name__}")
    x = getattr(data, "x", None)
    if x is None:
        x = data[0] if isinstance(data, (tuple, list)) else data
    x = np.asarray(x)
    if max_samples is not None:
        x = x[:int(max_samples)]
    if len(x) == 0:
        raise ValueError("recalibrate: no samples to estimate statistics on")
    layers = list(net.layers)
    cur = net
    for i, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool2d) or layer.threshold is None or layer.bn is None:
            continue
        mean, var = _moments(cur, i, x, batch_size)
        rho = layer.bn.ratio
        k = int(np.prod(layer.weights.shape[1:]))
        with np.errstate(invalid="ignore"):
            bound = mean - np.sqrt(var + layer.bn.eps) * np.where(np.isfinite(rho), rho, 0.0)
        integer = layer.threshold.dtype == np.int64
        if integer:
            t = np.clip(np.ceil(bound), -(k + 1), k + 1)
            t = np.where(np.isposinf(rho), -(k + 1), np.where(np.isneginf(rho), k + 1, t)).astype(np.int64)
        else:
            t = np.where(np.isposinf(rho), -np.inf, np.where(np.isneginf(rho), np.inf, bound))
        if isinstance(layer, Dense):
            layers[i] = Dense(layer.weights, threshold=t, bn=layer.bn)
        else:
            layers[i] = Conv2d(layer.weights, threshold=t, stride=layer.stride, padding=layer.padding,
                               pad_value=layer.pad_value, bn=layer.bn)
        cur = net.with_layers(layers)
    return cur


def infer_records(net: BinaryNetwork, data, eps: float = 1e-5, batch_size: int = 4096,
                  max_samples: int | None = None) -> BinaryNetwork:
    r"""``net`` with a BatchNorm record on every hidden layer that lacks one, recovered
    from its thresholds and the data: ``ρ = (μ − T + ½) / sqrt(σ² + ε)`` for integer
    thresholds (``T`` stands for the bounds in ``(T − 1, T]``; ``μ − T`` on real input),
    the ratio for which :func:`recalibrate` on ``data`` gives back ``T``. Units that no
    input can switch (``T ≤ −K`` or ``T > K``) stay constant. For networks
    trained without BatchNorm, or built by hand (the single bend's midpoint)."""
    from .layers import BatchNormRecord
    x = np.asarray(getattr(data, "x", data[0] if isinstance(data, (tuple, list)) else data))
    if max_samples is not None:
        x = x[:int(max_samples)]
    layers = list(net.layers)
    for i, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool2d) or layer.threshold is None or layer.bn is not None:
            continue
        rec = BatchNormRecord(np.zeros(layer.units), eps, after_pool=False)
        probe = net.with_layers(layers[:i] + [_with_bn(layer, rec)] + layers[i + 1:])
        mean, var = _moments(probe, i, x, batch_size)
        t = layer.threshold.astype(np.float64)
        k = int(np.prod(layer.weights.shape[1:]))
        # an integer T stands for every bound in (T - 1, T]: take the middle, so that
        # recalibrating on the same data rounds back to T
        mid = t - 0.5 if layer.threshold.dtype == np.int64 else t
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = (mean - mid) / np.sqrt(var + eps)
        const_on = np.isneginf(t) | ((layer.threshold.dtype == np.int64) & (t <= -k))
        const_off = np.isposinf(t) | ((layer.threshold.dtype == np.int64) & (t > k))
        rho = np.where(const_on, np.inf, np.where(const_off, -np.inf, rho))
        layers[i] = _with_bn(layer, BatchNormRecord(rho, eps))
    return net.with_layers(layers)


def _with_bn(layer, rec):
    if isinstance(layer, Dense):
        return Dense(layer.weights, threshold=layer.threshold, bn=rec)
    return Conv2d(layer.weights, threshold=layer.threshold, stride=layer.stride,
                  padding=layer.padding, pad_value=layer.pad_value, bn=rec)


def interpolate_records(a: BinaryNetwork, b: BinaryNetwork, t: float) -> list:
    """Per layer, the record at fraction ``t`` of a path from ``a`` to ``b`` (``ratio``
    linear in ``t``, as the continuous paths interpolate γ and β; a non-finite ratio, a
    constant unit, is taken from the nearer end). ``None`` where a layer has none."""
    out = []
    for la, lb in zip(a.layers, b.layers):
        ra, rb = getattr(la, "bn", None), getattr(lb, "bn", None)
        if ra is None or rb is None:
            out.append(None)
            continue
        from .layers import BatchNormRecord
        near = ra.ratio if t < 0.5 else rb.ratio
        fin = np.isfinite(ra.ratio) & np.isfinite(rb.ratio)
        r = np.where(fin, (1 - t) * np.where(fin, ra.ratio, 0) + t * np.where(fin, rb.ratio, 0), near)
        out.append(BatchNormRecord(r, (1 - t) * ra.eps + t * rb.eps, ra.after_pool))
    return out


def with_records(net: BinaryNetwork, records) -> BinaryNetwork:
    """``net`` with the hidden layers' BatchNorm records replaced by ``records``."""
    layers = [l if r is None else _with_bn(l, r) for l, r in zip(net.layers, records)]
    return net.with_layers(layers)
