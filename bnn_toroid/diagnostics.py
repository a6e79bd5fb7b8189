"""Health checks of a trained minimum: how far it moved, and which units carry nothing.

A landscape measured around a network that barely left its initialisation, or whose
hidden units are stuck, says little about landscapes (docs/training.md). :func:`snapshot`
records a model's weights before training and :func:`diagnose` compares the trained
model with it and probes its hidden units on data. :func:`bnn_toroid.train.fit` runs
both and stores the result in ``History.diagnostics``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import nn as bnn

__all__ = ["snapshot", "diagnose", "summary"]

_BINARY = (bnn.BinaryLinear, bnn.BinaryConv2d)
_REAL = (nn.Linear, nn.Conv2d)


def _weight_layers(model):
    """(name, module) of every layer with a weight matrix, binary and real-valued."""
    return [(n or "model", m) for n, m in model.named_modules()
            if isinstance(m, _BINARY + _REAL) and getattr(m, "weight", None) is not None]


def snapshot(model: nn.Module) -> dict:
    """Copies of the weight tensors of every dense / conv layer, keyed by module name
    (what :func:`diagnose` compares a trained model with)."""
    return {n: m.weight.detach().clone() for n, m in _weight_layers(model)}


def _activations(model):
    """The hidden activation modules: every Sign after a binary layer (not an input
    binarisation) and every ReLU, in forward order."""
    out, seen_layer = [], False
    for n, m in model.named_modules():
        if isinstance(m, _BINARY + _REAL):
            seen_layer = True
        elif isinstance(m, (bnn.Sign, nn.ReLU)) and seen_layer:
            out.append((n, m))
    return out


@torch.no_grad()
def _unit_stats(model, x, batch_size=2048):
    """Per activation module: (units, constant units, dead units) over the samples ``x``.

    A unit is one output feature (a channel for a convolution, pooled over positions).
    *Constant*: the same output on every sample (and position); for a sign unit that
    means it never changes sign. *Dead*: a ReLU unit that is 0 everywhere, or a sign
    unit stuck at -1 (it passes no signal the next layer can tell from a bias)."""
    acts = _activations(model)
    lo = [None] * len(acts)
    hi = [None] * len(acts)

    def hook(i):
        def f(_m, _inp, out):
            o = out.detach()
            o = o.transpose(0, 1).reshape(o.shape[1], -1) if o.dim() > 2 else o.t()
            mn, mx = o.min(1).values, o.max(1).values
            lo[i] = mn if lo[i] is None else torch.minimum(lo[i], mn)
            hi[i] = mx if hi[i] is None else torch.maximum(hi[i], mx)
        return f

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(acts)]
    was = model.training
    model.eval()
    try:
        for s in range(0, len(x), batch_size):
            model(x[s:s + batch_size].to(torch.float32))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    rows = []
    for (name, m), a, b in zip(acts, lo, hi):
        if a is None:
            continue
        const = (a == b)
        dead = (b <= 0) if isinstance(m, nn.ReLU) else (b < 0)
        rows.append({"name": name, "units": int(a.numel()), "constant": int(const.sum()),
                     "dead": int(dead.sum())})
    return rows


def diagnose(model: nn.Module, x, initial: dict | None = None, max_samples: int = 10000) -> dict:
    r"""How far ``model`` moved from ``initial`` and the state of its hidden units.

    ``layers``: per dense / conv layer, ``n_weights`` and

    - binary layers: ``signs_changed``, the fraction of weights with
      :math:`\operatorname{sign}(w) \ne \operatorname{sign}(w_0)` (larq's sign,
      ``sign(0) = +1``);
    - real-valued layers: ``relative_change`` :math:`\|w - w_0\| / \|w_0\|`.

    ``units``: per hidden activation, ``units``, ``constant`` and ``dead`` counts on the
    first ``max_samples`` rows of ``x`` (see :func:`_unit_stats`). ``signs_changed`` at
    the top level is the binary layers' pooled fraction (``None`` for real models).
    """
    x = torch.as_tensor(np.array(x[:max_samples]) if not isinstance(x, torch.Tensor) else x[:max_samples])
    layers, changed, total = [], 0, 0
    for name, m in _weight_layers(model):
        w = m.weight.detach()
        row = {"name": name, "n_weights": int(w.numel()),
               "kind": "binary" if isinstance(m, _BINARY) else "real"}
        w0 = None if initial is None else initial.get(name)
        if w0 is not None and w0.shape == w.shape:
            if isinstance(m, _BINARY):
                k = int((bnn.sign(w) != bnn.sign(w0)).sum())
                row["signs_changed"] = k / w.numel()
                changed, total = changed + k, total + w.numel()
            else:
                row["relative_change"] = float((w - w0).norm() / w0.norm().clamp_min(1e-30))
        layers.append(row)
    return {"layers": layers, "units": _unit_stats(model, x),
            "signs_changed": (changed / total) if total else None}


def summary(diag: dict) -> str:
    """One line a person reads first: movement from the initialisation and stuck units."""
    parts = []
    if diag.get("signs_changed") is not None:
        per = ", ".join(f"{100 * r['signs_changed']:.1f}" for r in diag["layers"] if "signs_changed" in r)
        parts.append(f"signs changed from init {100 * diag['signs_changed']:.1f} % (per layer {per})")
    rel = [r["relative_change"] for r in diag["layers"] if "relative_change" in r]
    if rel:
        parts.append("relative weight change " + ", ".join(f"{v:.2f}" for v in rel))
    if diag.get("units"):
        parts.append("constant/dead units " + ", ".join(
            f"{u['constant']}/{u['dead']} of {u['units']}" for u in diag["units"]))
    for k, label in (("random_label_error", "random-label error"),):
        if diag.get(k) is not None:
            parts.append(f"{label} {100 * diag[k]:.1f} %"
                         + ("" if diag.get("random_labels_fitted") else " (NOT fitted)"))
    if diag.get("replica_hamming") is not None:
        parts.append(f"replica-centre Hamming {diag['replica_hamming']:.4f}")
    elif diag.get("replica_distance") is not None:
        parts.append(f"replica-centre distance {diag['replica_distance']:.3g}")
    return "; ".join(parts)
