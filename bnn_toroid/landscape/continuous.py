r"""Flatness of real-valued networks: local energy under multiplicative weight noise.

Pittorino et al., "Deep Networks on Toroids", ICML 2022 (arXiv 2202.03038) (local
energy, after Baldassi et al. 2020 "Shaping the learning landscape in neural networks
around wide flat minima", PNAS); docs/methods.md, "Local energy of real-valued networks".
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from bnn_toroid.network.continuous import as_tensors, misclassified, model_dtype, parse
from bnn_toroid.network.graph import is_graph_model, parse as graph_parse

__all__ = ["LocalEnergy", "local_energy", "check_data", "DEFAULT_SIGMA"]

DEFAULT_SIGMA = tuple(round(0.05 * i, 2) for i in range(11))


@dataclass(frozen=True)
class LocalEnergy:
    """Result of :func:`local_energy`.

    ``sigma`` (S,), ``mean`` δE per sigma (S,), ``std`` standard deviation of the
    perturbed error over draws (S,), ``base_error`` the unperturbed train error, and
    ``errors`` the raw perturbed train errors, shape (samples, S).
    """
    sigma: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    base_error: float
    errors: np.ndarray = field(repr=False)

    @property
    def sem(self) -> np.ndarray:
        """Standard error of ``mean``: ``std / sqrt(samples)``."""
        return self.std / np.sqrt(self.errors.shape[0])


def check_data(model: nn.Module, x, y, what: str):
    """Refuse data the model cannot evaluate, by name, before any work: samples of the
    wrong shape (one trial sample, instead of torch's matrix-shape error deep inside a
    pass) and labels outside the model's classes (which would count as errors silently)."""
    layer = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    want = ("" if layer is None else f" ({layer.in_features} features into its first Linear)"
            if isinstance(layer, nn.Linear) else f" ({layer.in_channels} channels into its first Conv2d)")
    m = copy.deepcopy(model).eval() if model.training else model
    try:
        with torch.no_grad():
            out = m(x[:1].to(model_dtype(m)))
    except RuntimeError as e:
        raise ValueError(f"{what}: data x holds samples of shape {tuple(x.shape[1:])}, which the "
                         f"model cannot take ({str(e).splitlines()[0]}); expected samples the "
                         f"model was built for{want}") from None
    classes = out.reshape(out.shape[0], -1).shape[1]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"{what}: data y holds labels in [{int(y.min())}, {int(y.max())}]; expected "
                         f"class indices in [0, {classes}) for a model with {classes} outputs")


def local_energy(model: nn.Module, data, sigma: Sequence[float] = DEFAULT_SIGMA,
                 samples: int = 100, seed: int = 0, batch_size: int = 1024,
                 chunk: int = 8) -> LocalEnergy:
    r"""Local energy: mean rise of the train error under multiplicative Gaussian noise,

    .. math::
        \delta E(\sigma) = \mathbb{E}_z\big[E_\mathrm{train}(w + \sigma\, z \odot w)\big]
                           - E_\mathrm{train}(w), \qquad z \sim \mathcal{N}(0, 1)
                           \text{ element-wise,}

    with ``E_train`` the fraction of misclassified samples of ``data`` (error, not loss)
    and the expectation estimated over ``samples`` draws. Pittorino et al. 2022 (local energy);
    docs/methods.md, "Local energy of real-valued networks" (100 draws; σ ∈ [0, 0.5] for MLPs, [0, 0.25] for LeNet).

    The noise hits every parameter of the model as given: weights, biases and BN affine
    parameters; BN runs in eval mode with its running statistics (buffers) unperturbed.
    Multiplicative noise commutes with both symmetries (a rescaled or permuted copy has
    the same δE in distribution). The same draws ``z`` are used for every σ (common
    random numbers: the curve is smooth in σ and differences between σ are precise);
    ``seed`` fixes them. ``chunk`` perturbed networks are evaluated per pass with
    ``torch.vmap`` over ``torch.func.functional_call``; memory is about
    ``chunk × batch_size × widest layer`` floats.

    Raises ValueError for σ < 0 (or non-finite), NaN/inf parameters, or bad data: samples
    of a shape the model cannot take, or labels outside its classes (:func:`check_data`).
    """
    sig = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if sig.size == 0:
        raise ValueError("local_energy: sigma is empty")
    if not np.isfinite(sig).all() or (sig < 0).any():
        raise ValueError(f"local_energy: sigma must be finite and >= 0, got {sig.tolist()}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"local_energy: samples must be an integer >= 1, got {samples!r}")
    if chunk < 1 or batch_size < 1:
        raise ValueError("local_energy: chunk and batch_size must be >= 1")
    # clear errors for unsupported layers and NaN/inf parameters (a traced graph for
    # anything but an nn.Sequential: residual networks, docs/methods.md)
    graph_parse(model) if is_graph_model(model) else parse(model)
    x, y = as_tensors(data, "local_energy: data")
    m = copy.deepcopy(model).eval()
    check_data(m, x, y, "local_energy")
    dtype = model_dtype(m)
    params = {n: p.detach() for n, p in m.named_parameters()}
    buffers = {n: b.detach() for n, b in m.named_buffers()}
    P = x.shape[0]
    base = misclassified(m, x, y, batch_size) / P

    def f(p, xb):
        return functional_call(m, (p, buffers), (xb,))

    vf = torch.vmap(f, in_dims=(0, None))
    gen = torch.Generator().manual_seed(int(seed))
    errs = np.zeros((int(samples), sig.size))
    with torch.no_grad():
        for s0 in range(0, int(samples), chunk):
            k = min(chunk, int(samples) - s0)
            # one z per parameter set, shared across sigma (common random numbers)
            z = {n: torch.randn((k,) + tuple(p.shape), generator=gen, dtype=torch.float64)
                 .to(p.dtype) for n, p in params.items()}
            pert = [{n: p + float(s) * z[n] * p for n, p in params.items()} for s in sig]
            wrong = torch.zeros(sig.size, k, dtype=torch.long)
            for i in range(0, P, batch_size):
                xb = x[i:i + batch_size].to(dtype)
                yb = y[i:i + batch_size]
                for j in range(sig.size):
                    out = vf(pert[j], xb)
                    wrong[j] += (out.reshape(k, xb.shape[0], -1).argmax(-1) != yb).sum(1)
            errs[s0:s0 + k] = (wrong.T.numpy() / P)
    delta = errs - base
    return LocalEnergy(sigma=sig, mean=delta.mean(0),
                       std=errs.std(0, ddof=1) if samples > 1 else np.zeros(sig.size),
                       base_error=float(base), errors=errs)
