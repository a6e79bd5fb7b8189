"""Training loops that find minima of different flatness (Pittorino et al., ICML 2022,
"Deep Networks on Toroids", §5 and METHODS §7).

:func:`fit` trains a torch model in place with one of

- ``"sgd"``: SGD with Nesterov momentum and a cosine-annealed learning rate;
- ``"rsgd"``: replicated SGD, ``y`` replicas elastically coupled to their centre
  (Pittorino et al., ICLR 2021, "Entropic gradient descent algorithms and wide flat
  minima"); the centre is the solution, flatter than SGD's;
- ``"adv"``: adversarial initialisation (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020,
  "Bad global minima exist and SGD can reach them") followed by SGD; sharper minima;
- ``"sam"``: sharpness-aware minimisation (Foret et al., ICLR 2021) **[ours]**.

Binary models (any model containing :class:`~bnn_toroid.nn.BinaryLinear` or
:class:`~bnn_toroid.nn.BinaryConv2d`) are trained BinaryNet style (Hubara, Courbariaux
et al., NeurIPS 2016): the optimiser updates latent float weights, the forward pass uses
their sign with a straight-through estimator (:func:`bnn_toroid.nn.sign_ste`), and after
every optimiser step every module with a ``clip_()`` method clamps its latent weights to
[-1, 1]. Real-valued models train normally.

Inputs are used as given, converted to float32 batch by batch (uint8 images become
0..255): models that want standardised inputs carry a :class:`~bnn_toroid.nn.Normalize`
module built from :func:`input_norm`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nn as bnn
from .datasets import Dataset

__all__ = ["fit", "History", "evaluate", "recompute_bn_stats", "input_norm", "is_binary",
           "adversarial_copy", "METHODS"]

METHODS = ("sgd", "rsgd", "adv", "sam")

# Defaults measured on digits / Fashion-MNIST (docs/training.md).
_DEFAULT_LR = {"binary": 10.0, "real": 0.05}
# RSGD coupling defaults [ours]: gamma grows 1000-fold over the run, and gamma0 is set so
# that the integrated elastic pull sum_t eta_t gamma_t / (1 - mu) is about 10 (with the
# cosine schedule, integral_0^1 1000^u (1 + cos(pi u)) / 2 du = 12.3).
_GAMMA_GROWTH = 1000.0
_GAMMA_PULL = 0.8


@dataclass
class History:
    """What :func:`fit` did, one entry per epoch.

    ``loss[e]``: mean training loss over epoch ``e``'s minibatches (the data term only;
    for ``rsgd`` averaged over replicas, without the coupling; for ``adv``'s first
    phase, on the augmented data). ``train_error[e]``: fraction of the training set
    (true labels) misclassified by the model (for ``rsgd``: the centre, with
    recomputed BatchNorm statistics) in eval mode at the end of epoch ``e``.
    ``lr[e]``: learning rate at the start of epoch ``e``. ``phase[e]``: ``"adv_init"``
    for the adversarial pre-training epochs of ``adv`` (followed by ``"sgd"`` epochs),
    else the method name.

    ``rsgd`` only: ``gamma[e]`` (coupling at the end of epoch ``e``),
    ``replica_distance[e]`` (mean over replicas of ``‖w_a − w̄‖ / sqrt(n_params)`` over
    all trainable parameters), ``replica_hamming[e]`` (binary models: mean over replicas
    of the fraction of binary weights whose sign differs from the centre's).
    ``adv`` only: ``random_label_error[e]`` for the pre-training epochs, the error on
    the random-label, pixel-zeroed copy. ``seconds``: wall time of the whole call.
    """

    method: str
    loss: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    phase: list = field(default_factory=list)
    gamma: list = field(default_factory=list)
    replica_distance: list = field(default_factory=list)
    replica_hamming: list = field(default_factory=list)
    random_label_error: list = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.loss)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def input_norm(dataset) -> tuple:
    """``(mean, std)`` of the data set's full training split, for ``Normalize(mean, std)``,
    i.e. the standardisation ``(x - mean) / std`` the paper applies to inputs (§5). The
    binary first layer folds it into integer thresholds (METHODS §1)."""
    if not hasattr(dataset, "mean") or not hasattr(dataset, "std"):
        raise ValueError("input_norm: expected a bnn_toroid.datasets.Dataset "
                         f"(with mean and std), got {type(dataset).__name__}")
    return dataset.mean, dataset.std


def is_binary(model: nn.Module) -> bool:
    """True if ``model`` contains a BinaryLinear or BinaryConv2d layer (BinaryNet training:
    latent weights, STE, clipping)."""
    return any(isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d)) for m in model.modules())


def _clippers(model):
    return [m for m in model.modules() if callable(getattr(m, "clip_", None))]


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _device(model):
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to_tensors(data, what="fit"):
    """(x, y, num_classes or None) from a Dataset or an (x, y) pair, with checks."""
    num_classes = None
    if isinstance(data, Dataset):
        x, y, num_classes = data.x, data.y, data.num_classes
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise ValueError(f"{what}: data must be a bnn_toroid.datasets.Dataset or an (x, y) "
                         f"pair, got {type(data).__name__}")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(f"{what}: data is empty (x has shape {x.shape})")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{what}: y must be 1-D with one label per sample; x has "
                         f"{len(x)} samples, y has shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ValueError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(f"{what}: x contains {bad} NaN or infinite values")
        x = x.astype(np.float32)
    elif not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what}: x must be numeric, got dtype {x.dtype}")
    elif x.dtype not in (np.uint8, np.int8, np.int16, np.int32, np.int64):
        x = x.astype(np.int64)
    xt = torch.from_numpy(np.ascontiguousarray(x).copy())
    yt = torch.from_numpy(y.astype(np.int64))
    return xt, yt, num_classes


def _check_model(model, x, y, num_classes, what="fit") -> int:
    """Forward one sample (eval mode, no grad) and check labels against the outputs.
    Returns the number of outputs."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:1].to(_device(model), torch.float32))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"{what}: the model does not accept inputs of shape "
                         f"{tuple(x.shape[1:])} (one sample {tuple(x[:1].shape)}): "
                         f"{type(e).__name__}: {e}") from e
    finally:
        model.train(was)
    if out.dim() != 2 or out.shape[0] != 1:
        raise ValueError(f"{what}: the model must output (batch, classes) logits; one "
                         f"sample gave shape {tuple(out.shape)}")
    c = int(out.shape[1])
    k = 2 if c == 1 else c
    if num_classes is not None and num_classes > k:
        raise ValueError(f"{what}: the data set has {num_classes} classes but the model "
                         f"has only {c} output(s)")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"{what}: labels range over {lo}..{hi} but the model has {c} "
                         f"output(s), so labels must lie in 0..{k - 1}")
    return c


def _loss(out, y):
    if out.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))
    return F.cross_entropy(out, y)


def _predict(out):
    if out.shape[1] == 1:
        return (out[:, 0] >= 0).long()
    return out.argmax(1)


def _batches(n, batch_size):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@torch.no_grad()
def _evaluate_tensors(model, x, y, batch_size=2048):
    was = model.training
    model.eval()
    dev = _device(model)
    tot_loss, wrong = 0.0, 0
    try:
        for s in _batches(len(y), batch_size):
            xb = x[s].to(dev, torch.float32)
            yb = y[s].to(dev)
            out = model(xb)
            tot_loss += float(_loss(out, yb)) * len(yb)
            wrong += int((_predict(out) != yb).sum())
    finally:
        model.train(was)
    return tot_loss / len(y), wrong / len(y)


def evaluate(model: nn.Module, data, batch_size: int = 2048) -> tuple:
    """``(loss, error)`` of ``model`` on ``data`` in eval mode.

    ``loss`` is the mean cross-entropy ``-log softmax(f(x))_y`` (binary cross-entropy
    on the single logit for one-output models), ``error`` the fraction of samples with
    ``argmax f(x) != y`` (ties go to the lowest index, ``torch.argmax``; one-output
    models predict 1 iff ``f(x) >= 0``). This is the train/test error of Pittorino et
    al. 2022 (§5).
    """
    x, y, k = _to_tensors(data, "evaluate")
    _check_model(model, x, y, k, "evaluate")
    return _evaluate_tensors(model, x, y, batch_size)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, data, batch_size: int = 1000,
                       max_samples: Optional[int] = None) -> nn.Module:
    """Recompute every BatchNorm layer's running mean and variance on ``data``.

    Sets ``momentum=None`` (cumulative average over batches), resets the statistics and
    runs the model in train mode without gradients over the samples in order (the first
    ``max_samples`` if given), as ``torch.optim.swa_utils.update_bn`` does. Averaged or
    interpolated weights need their own statistics (RSGD centre, METHODS §6–7). Returns
    ``model`` in the mode it was in. Models without BatchNorm are left untouched.
    """
    bns = _bns(model)
    if not bns:
        return model
    if isinstance(data, torch.Tensor) or (isinstance(data, np.ndarray)):
        x = torch.as_tensor(np.asarray(data)) if isinstance(data, np.ndarray) else data
    else:
        x = _to_tensors(data, "recompute_bn_stats")[0]
    if max_samples is not None:
        x = x[:max_samples]
    saved = [m.momentum for m in bns]
    was = model.training
    dev = _device(model)
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for s in _batches(len(x), batch_size):
            model(x[s].to(dev, torch.float32))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was)
    return model


def adversarial_copy(x: np.ndarray, num_classes: int, fraction: float = 0.1, seed: int = 0):
    """The random-label copy of Liu et al. 2020 (§4, "adversarial initialization").

    Returns ``(x_adv, y_rand)``: ``x_adv`` is ``x`` with a random ``fraction`` of each
    sample's pixels set to 0 (``round(fraction · H·W)`` positions per image, the same
    positions in every channel; for vector data, of its features) and ``y_rand`` uniform
    random labels in ``0 .. num_classes-1``. Drawn from ``numpy.random.default_rng(seed)``.
    """
    x = np.asarray(x)
    rng = np.random.default_rng(seed)
    y_rand = rng.integers(0, num_classes, len(x)).astype(np.int64)
    if x.ndim == 4:
        n_pos = x.shape[2] * x.shape[3]
    else:
        n_pos = int(np.prod(x.shape[1:], dtype=np.int64))
    k = int(round(fraction * n_pos))
    x_adv = np.array(x, copy=True)
    if k > 0:
        flat = x_adv.reshape(len(x), x.shape[1], -1) if x.ndim == 4 else x_adv.reshape(len(x), -1)
        rows = np.arange(len(x))[:, None]
        for s in _batches(len(x), 4096):
            pos = np.argpartition(rng.random((s.stop - s.start, n_pos)), k - 1, axis=1)[:, :k]
            if x.ndim == 4:
                flat[s][rows[: s.stop - s.start], :, pos] = 0
            else:
                flat[s][rows[: s.stop - s.start], pos] = 0
    return x_adv, y_rand


def _cosine(lr, step, total):
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


class _FrozenBN:
    """Context: BatchNorm layers keep their running statistics (momentum 0)."""

    def __init__(self, model):
        self.bns = _bns(model)

    def __enter__(self):
        self.saved = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc):
        for m, mom in zip(self.bns, self.saved):
            m.momentum = mom


def _sgd(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0,
                           weight_decay=weight_decay)


def _train_params(model):
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------

def fit(model: nn.Module, data, method: str = "sgd", *, epochs: int = 10,
        lr: Optional[float] = None, batch_size: int = 128, momentum: float = 0.9,
        weight_decay: float = 0.0, seed: int = 0, quiet: bool = False,
        replicas: int = 5, gamma0: Optional[float] = None, gamma1: Optional[float] = None,
        replica_noise: float = 0.5, adv_epochs: Optional[int] = None,
        adv_fraction: float = 0.1, adv_lr: Optional[float] = None,
        sam_rho: float = 0.05, eval_batch_size: int = 2048) -> History:
    r"""Train ``model`` in place on ``data`` and return its :class:`History`.

    Pittorino et al., ICML 2022, §5 / METHODS §7. Loss: cross-entropy
    ``ℓ(w) = -log softmax(f_w(x))_y`` (binary cross-entropy on the logit for one-output
    models). Learning rate, per optimiser step ``t`` of ``T``:
    ``η_t = η · ½(1 + cos(π t / T))`` (cosine annealing, Loshchilov & Hutter 2017).
    Every update is SGD with Nesterov momentum ``μ`` and weight decay ``λ``
    (``v ← μ v + g + λ w``; ``w ← w − η_t (g + λ w + μ v)``). Binary models: ``g`` is the
    straight-through gradient w.r.t. the latent weights, which are clipped to [-1, 1]
    after every step (BinaryNet, Hubara et al. 2016).

    Methods
    -------
    ``"sgd"``
        The update above on minibatches of a fresh random permutation each epoch.
    ``"rsgd"`` (replicated SGD, Pittorino et al. ICLR 2021; ICML 2022 §5)
        ``y = replicas`` copies ``w_a`` of the model, each perturbed at start by
        ``w_a ← w + replica_noise · std(W) · z`` per parameter tensor (``z ~ N(0,1)``;
        BatchNorm's constant initial weights stay equal), each with its own minibatch
        order and momentum buffer, minimise

        .. math:: \sum_a \ell(w_a) + \frac{\gamma_t}{2} \sum_a \|w_a - \bar w\|^2,
                  \qquad \bar w = \frac1y \sum_a w_a,

        so replica ``a`` gets the extra gradient ``γ_t (w_a − w̄)`` (the centre is the
        replicas' mean, recomputed before every synchronous step; the ``w̄``-terms of the
        gradient cancel). ``γ_t = γ0 (1 + γ1)^t`` with ``t`` the epoch, fractional within
        an epoch (``t = step / steps_per_epoch``). Defaults **[ours]**, scale-free in the
        learning rate and data size: ``γ1 = 1000^{1/E} − 1`` (γ grows 1000-fold over the
        ``E = epochs``) and ``γ0 = 0.8 (1 − μ) / (η S E)`` with ``S`` steps per epoch, so
        the integrated pull ``Σ_t η_t γ_t / (1 − μ)`` on ``w_a − w̄`` is ≈ 10 (the spread
        of the replicas shrinks by ≈ e^{-10}, most of it in the second half). The
        coupling acts on all trainable parameters (latent weights for binary layers, BN
        affine parameters too). At the end of every epoch (and so at the end of
        training) ``w̄`` is loaded into ``model`` and its BatchNorm statistics are
        recomputed on the training data (:func:`recompute_bn_stats`); for binary models
        the solution is ``sign(w̄)`` of the mean latent weights.
    ``"adv"`` (Liu et al. NeurIPS 2020, §4)
        ``adv_epochs`` (default: ``epochs``) epochs of SGD on the training set plus
        :func:`adversarial_copy` of it (uniform random labels, ``adv_fraction`` of each
        image's pixels zeroed), learning rate ``adv_lr`` (default ``lr``), then
        ``epochs`` epochs of SGD on the true labels with a fresh optimiser and schedule.
    ``"sam"`` (Foret et al. ICLR 2021, Alg. 1) **[ours]**
        ``ε = ρ g / ‖g‖`` (global norm over all parameters), gradient
        ``g' = ∇ℓ(w + ε)`` (BatchNorm running statistics not updated on this pass), then
        the SGD update at ``w`` with ``g'``.

    Parameters
    ----------
    model : a torch module mapping a float32 batch to ``(batch, classes)`` logits.
    data : a :class:`~bnn_toroid.datasets.Dataset` or an ``(x, y)`` pair of arrays.
        ``x`` is used as given, cast to float32 per batch.
    lr : peak learning rate ``η`` (default 10.0 for binary models, whose latent weights
        live in [-1, 1] and get small STE gradients; 0.05 for real-valued ones).
    epochs, batch_size, momentum, weight_decay : as in the formulas above (``epochs``
        counts the SGD epochs; ``adv`` adds ``adv_epochs`` before them).
    replicas, gamma0, gamma1, replica_noise : ``rsgd``'s ``y``, ``γ0``, ``γ1`` (``None``:
        the defaults above) and initial perturbation.
    adv_epochs, adv_fraction, adv_lr : ``adv``'s pre-training length, fraction of zeroed
        pixels (Liu et al. use 10 %) and learning rate.
    sam_rho : SAM's radius ``ρ`` (Foret et al.'s default 0.05).
    seed : seeds ``torch.manual_seed``, the ``torch.Generator`` for shuffling and
        replica noise and the numpy generator for the adversarial copy: equal seeds,
        equal initial models and equal thread counts give bitwise equal weights.
    quiet : hide the tqdm progress bar over epochs.
    eval_batch_size : batch size of the end-of-epoch evaluation and BN recomputation.

    Returns the :class:`History`; ``model`` holds the trained weights and is left in
    eval mode.
    """
    t_start = time.perf_counter()
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"fit: unknown method {method!r}; known methods: {', '.join(METHODS)}")
    method = method.lower()
    if not isinstance(model, nn.Module):
        raise ValueError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}")
    binary = is_binary(model)
    if lr is None:
        lr = _DEFAULT_LR["binary" if binary else "real"]
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("replicas", replicas, 1)
    _check_int("eval_batch_size", eval_batch_size, 1)
    if adv_epochs is None:
        adv_epochs = epochs
    _check_int("adv_epochs", adv_epochs, 0)
    if adv_lr is None:
        adv_lr = lr
    for nm, v in (("lr", lr), ("adv_lr", adv_lr)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"fit: {nm} must be a finite number > 0, got {v!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"fit: momentum must lie in [0, 1), got {momentum!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"fit: weight_decay must be >= 0, got {weight_decay!r}")
    for nm, v in (("gamma0", gamma0), ("gamma1", gamma1)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"fit: {nm} must be a finite number >= 0, got {v!r}")
    if not (math.isfinite(replica_noise) and replica_noise >= 0):
        raise ValueError(f"fit: replica_noise must be >= 0, got {replica_noise!r}")
    if not 0 <= adv_fraction <= 1:
        raise ValueError(f"fit: adv_fraction must lie in [0, 1], got {adv_fraction!r}")
    if not (math.isfinite(sam_rho) and sam_rho > 0):
        raise ValueError(f"fit: sam_rho must be > 0, got {sam_rho!r}")

    x, y, num_classes = _to_tensors(data)
    n_out = _check_model(model, x, y, num_classes)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    hist = History(method=method, config=dict(
        epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
        weight_decay=weight_decay, seed=seed, binary=binary, n_train=len(y)))
    total_epochs = epochs + (adv_epochs if method == "adv" else 0)

    from tqdm.auto import tqdm
    bar = tqdm(total=total_epochs, disable=quiet, desc=f"fit[{method}]", leave=False)
    try:
        if method == "rsgd":
            steps_per_epoch = -(-len(y) // batch_size)
            if gamma1 is None:
                gamma1 = _GAMMA_GROWTH ** (1.0 / epochs) - 1.0
            if gamma0 is None:
                gamma0 = _GAMMA_PULL * (1.0 - momentum) / (lr * steps_per_epoch * epochs)
            hist.config.update(replicas=replicas, gamma0=gamma0, gamma1=gamma1,
                               replica_noise=replica_noise)
            _fit_rsgd(model, x, y, hist, bar, gen, epochs, lr, batch_size, momentum,
                      weight_decay, replicas, gamma0, gamma1, replica_noise, binary,
                      eval_batch_size)
        else:
            if method == "adv" and adv_epochs > 0:
                hist.config.update(adv_epochs=adv_epochs, adv_fraction=adv_fraction,
                                   adv_lr=adv_lr)
                k = num_classes if num_classes is not None else max(n_out, 2)
                x_adv, y_rand = adversarial_copy(x.numpy(), k, adv_fraction, seed)
                x_adv, y_rand = torch.from_numpy(x_adv), torch.from_numpy(y_rand)
                _fit_plain(model, torch.cat([x, x_adv]), torch.cat([y, y_rand]), hist, bar,
                           gen, adv_epochs, adv_lr, batch_size, momentum, weight_decay,
                           None, "adv_init", (x, y), (x_adv, y_rand), eval_batch_size)
            rho = sam_rho if method == "sam" else None
            _fit_plain(model, x, y, hist, bar, gen, epochs, lr, batch_size, momentum,
                       weight_decay, rho, "sgd" if method == "adv" else method, (x, y), None,
                       eval_batch_size)
    finally:
        bar.close()
    model.eval()
    hist.seconds = time.perf_counter() - t_start
    return hist


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"fit: {name} must be an integer >= {lo}, got {v!r}")


def _fit_plain(model, x, y, hist, bar, gen, epochs, lr, batch_size, momentum,
               weight_decay, rho, phase, eval_data, rand_data, eval_bs):
    """SGD (rho None) or SAM (rho > 0) epochs on (x, y), recording into hist."""
    params = _train_params(model)
    opt = _sgd(params, lr, momentum, weight_decay)
    clippers = _clippers(model)
    n = len(y)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    frozen = _FrozenBN(model)
    dev = _device(model)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        hist.lr.append(_cosine(lr, step, total))
        tot = 0.0
        for s in _batches(n, batch_size):
            idx = perm[s]
            xb, yb = x[idx].to(dev, torch.float32), y[idx].to(dev)
            for g in opt.param_groups:
                g["lr"] = _cosine(lr, step, total)
            opt.zero_grad(set_to_none=True)
            loss = _loss(model(xb), yb)
            loss.backward()
            if rho is not None:
                _sam_perturbed_grad(model, params, opt, xb, yb, rho, frozen)
            opt.step()
            for m in clippers:
                m.clip_()
            tot += loss.item() * len(yb)
            step += 1
        hist.loss.append(tot / n)
        hist.phase.append(phase)
        hist.train_error.append(_evaluate_tensors(model, *eval_data, eval_bs)[1])
        if rand_data is not None:
            hist.random_label_error.append(_evaluate_tensors(model, *rand_data, eval_bs)[1])
        bar.update(1)
        bar.set_postfix(loss=f"{hist.loss[-1]:.4f}", err=f"{hist.train_error[-1]:.4f}")


def _sam_perturbed_grad(model, params, opt, xb, yb, rho, frozen):
    """Replace the gradients by SAM's ∇ℓ(w + ρ g/‖g‖), leaving w unchanged."""
    with torch.no_grad():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        scale = rho / (norm + 1e-12)
        eps = [g * scale for g in grads]
        for p, e in zip(params, eps):
            p.add_(e)
    opt.zero_grad(set_to_none=True)
    with frozen:
        _loss(model(xb), yb).backward()
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)


def _fit_rsgd(model, x, y, hist, bar, gen, epochs, lr, batch_size, momentum,
              weight_decay, y_rep, gamma0, gamma1, noise, binary, eval_bs):
    reps = [copy.deepcopy(model) for _ in range(y_rep)]
    for r in reps:
        with torch.no_grad():
            for p in _train_params(r):
                if p.numel() > 1 and noise > 0:
                    sd = float(p.std())
                    if sd > 0:
                        p.add_(torch.randn(p.shape, generator=gen).to(p) * (noise * sd))
        for m in _clippers(r):
            m.clip_()
    rparams = [_train_params(r) for r in reps]
    opts = [_sgd(ps, lr, momentum, weight_decay) for ps in rparams]
    clippers = [_clippers(r) for r in reps]
    centre_params = _train_params(model)
    binary_idx = _binary_param_indices(model)
    has_bn = bool(_bns(model))
    n = len(y)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    dev = _device(model)

    def load_centre():
        with torch.no_grad():
            for i, c in enumerate(centre_params):
                c.copy_(torch.stack([ps[i] for ps in rparams]).mean(0))
        if has_bn:
            recompute_bn_stats(model, x, eval_bs)

    for epoch in range(epochs):
        for r in reps:
            r.train()
        perms = [torch.randperm(n, generator=gen) for _ in reps]
        hist.lr.append(_cosine(lr, step, total))
        tot = 0.0
        for s in _batches(n, batch_size):
            eta = _cosine(lr, step, total)
            gamma = gamma0 * (1.0 + gamma1) ** (step / steps_per_epoch)
            with torch.no_grad():
                centre = [torch.stack([ps[i] for ps in rparams]).mean(0)
                          for i in range(len(centre_params))]
            for a, r in enumerate(reps):
                idx = perms[a][s]
                xb, yb = x[idx].to(dev, torch.float32), y[idx].to(dev)
                opt = opts[a]
                for g in opt.param_groups:
                    g["lr"] = eta
                opt.zero_grad(set_to_none=True)
                loss = _loss(r(xb), yb)
                loss.backward()
                with torch.no_grad():
                    for p, c in zip(rparams[a], centre):
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        p.grad.add_(p - c, alpha=gamma)
                opt.step()
                for m in clippers[a]:
                    m.clip_()
                tot += loss.item() * len(yb)
            step += 1
        hist.loss.append(tot / (n * y_rep))
        hist.phase.append("rsgd")
        hist.gamma.append(gamma0 * (1.0 + gamma1) ** (step / steps_per_epoch))
        load_centre()
        with torch.no_grad():
            n_par = sum(c.numel() for c in centre_params)
            dist = [math.sqrt(sum(float(((p - c) ** 2).sum()) for p, c in zip(ps, centre_params))
                              / n_par) for ps in rparams]
            hist.replica_distance.append(float(np.mean(dist)))
            if binary_idx:
                n_bin = sum(centre_params[i].numel() for i in binary_idx)
                ham = [sum(int((bnn.sign(ps[i]) != bnn.sign(centre_params[i])).sum())
                           for i in binary_idx) / n_bin for ps in rparams]
                hist.replica_hamming.append(float(np.mean(ham)))
        hist.train_error.append(_evaluate_tensors(model, x, y, eval_bs)[1])
        bar.update(1)
        bar.set_postfix(loss=f"{hist.loss[-1]:.4f}", err=f"{hist.train_error[-1]:.4f}",
                        dist=f"{hist.replica_distance[-1]:.3g}")


def _binary_param_indices(model):
    """Indices (in _train_params order) of the latent weights of binary layers."""
    ids = {id(m.weight) for m in model.modules()
           if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d))}
    return [i for i, p in enumerate(_train_params(model)) if id(p) in ids]
