"""Training loops that find minima of different flatness (Pittorino et al., ICML 2022,
"Deep Networks on Toroids", §5; docs/methods.md, "Training").

:func:`fit` trains a torch model in place with one of

- ``"sgd"``: the base optimiser (SGD with Nesterov momentum by default, Adam on request)
  with a cosine-annealed learning rate;
- ``"rsgd"``: replicated SGD, ``y`` independently initialised replicas elastically
  coupled to their centre (Pittorino et al., ICLR 2021, "Entropic gradient descent
  algorithms and wide flat minima"; Baldassi et al., PNAS 2020); the centre is the
  solution, flatter than SGD's;
- ``"adv"``: adversarial initialisation (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020,
  "Bad global minima exist and SGD can reach them"): fit random labels first, then the
  true ones; sharper minima;
- ``"sam"``: sharpness-aware minimisation (Foret et al., ICLR 2021) **[ours]**.

Binary models (any model containing :class:`~bnn_toroid.nn.BinaryLinear` or
:class:`~bnn_toroid.nn.BinaryConv2d`) are trained BinaryNet style (Hubara, Courbariaux
et al., NeurIPS 2016): the optimiser updates latent float weights (Glorot-scale at
initialisation), the forward pass uses their sign with a straight-through estimator
(:func:`bnn_toroid.nn.sign_ste`), and after every optimiser step every module with a
``clip_()`` method clamps its latent weights to [-1, 1]. BatchNorm parameters sit in
their own parameter group with their own learning rate. Real-valued models train
normally. Every run ends with :mod:`bnn_toroid.diagnostics` in ``History.diagnostics``.

Inputs are used as given, converted to float32 batch by batch (uint8 images become
0..255): models that want standardised inputs carry a :class:`~bnn_toroid.nn.Normalize`
module built from :func:`input_norm`.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nn as bnn
from .datasets import Dataset
from .diagnostics import snapshot

__all__ = ["fit", "History", "evaluate", "recompute_bn_stats", "input_norm", "is_binary",
           "adversarial_copy", "check_options", "METHODS", "OPTIMIZERS", "REPLICA_INITS", "defaults"]

METHODS = ("sgd", "rsgd", "adv", "sam")
OPTIMIZERS = ("adam", "sgd")
REPLICA_INITS = ("independent", "perturbed")

# The recipe's defaults, chosen by measurement on Fashion-MNIST (docs/training.md):
# both kinds train with SGD + Nesterov (the base optimiser of the authors' RSGD), binary
# ones on Glorot-scale latent weights with BatchNorm at its own, much lower, rate.
# (kind, optimizer) -> (lr, bn_lr).
_OPTIMIZER = {"binary": "sgd", "real": "sgd"}
_RATES = {
    ("binary", "adam"): (3e-3, 1e-3),
    ("binary", "sgd"): (10.0, 0.05),   # latent weights get small STE gradients
    ("real", "sgd"): (0.05, 0.05),
    ("real", "adam"): (1e-3, 1e-3),
}
# RSGD's coupling grows 10^4-fold over the run, as in the authors' robust-ensemble code
# (Pittorino et al. 2021); gamma0 balances the coupling term against the data loss.
_GAMMA_GROWTH = 1e4
# ADV's pre-training stops at this random-label train error (Liu et al. need the random
# labels memorised), or at its epoch cap.
_ADV_TARGET = 0.05


def defaults(binary: bool, optimizer: Optional[str] = None) -> dict:
    """The optimiser, peak learning rate and BatchNorm learning rate :func:`fit` uses
    when none is given, for a binary (``True``) or real-valued model (and, if given, that
    optimiser)."""
    kind = "binary" if binary else "real"
    opt = _OPTIMIZER[kind] if optimizer is None else optimizer
    lr, bn_lr = _RATES[(kind, opt)]
    return {"optimizer": opt, "lr": lr, "bn_lr": bn_lr}


@dataclass
class History:
    """What :func:`fit` did, one entry per epoch, and the health of the result.

    ``loss[e]``: mean training loss over epoch ``e``'s minibatches (the data term only;
    for ``rsgd`` averaged over replicas, without the coupling; for ``adv``'s first
    phase, on the augmented data). ``train_error[e]``: fraction of the training set
    (true labels) misclassified by the model (for ``rsgd``: the centre, with
    recomputed BatchNorm statistics) in eval mode at the end of epoch ``e``.
    ``lr[e]``: the weights' learning rate at the start of epoch ``e``. ``phase[e]``:
    ``"adv_init"`` for the adversarial pre-training epochs of ``adv`` (followed by
    ``"sgd"`` epochs), else the method name.

    ``rsgd`` only: ``gamma[e]`` (coupling at the end of epoch ``e``),
    ``replica_distance[e]`` (mean over replicas of ``‖w_a − w̄‖ / sqrt(n_params)`` over
    all trainable parameters), ``replica_hamming[e]`` (binary models: mean over replicas
    of the fraction of binary weights whose sign differs from the centre's).
    ``adv`` only: ``random_label_error[e]`` for the pre-training epochs, the error on
    the random-label, pixel-zeroed copy. ``seconds``: wall time of the whole call.

    ``diagnostics`` (:func:`bnn_toroid.diagnostics.diagnose`): per layer the fraction of
    signs changed from the initialisation (binary) or the relative weight change (real),
    constant and dead hidden units, and for ``adv`` ``random_label_error`` /
    ``random_labels_fitted`` / ``adv_epochs_run`` and ``signs_changed_since_adv``, for
    ``rsgd`` the final ``replica_distance`` and ``replica_hamming``. :meth:`summary`
    gives it as one line.
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
    diagnostics: dict = field(default_factory=dict)

    def summary(self) -> str:
        """The diagnostics as one line (empty before :func:`fit` filled them)."""
        from .diagnostics import summary
        return summary(self.diagnostics) if self.diagnostics else ""

    @property
    def epochs(self) -> int:
        return len(self.loss)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

def input_norm(dataset) -> tuple:
    """``(mean, std)`` of the data set's full training split, for ``Normalize(mean, std)``,
    i.e. the standardisation ``(x - mean) / std`` the paper applies to inputs (§5). The
    binary first layer folds it into integer thresholds (docs/methods.md, "Integer threshold form")."""
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
    interpolated weights need their own statistics (RSGD centre, docs/methods.md, "Replicated SGD (RSGD)"). Returns
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


def _param_groups(model, lr, bn_lr, weight_decay):
    """Two groups: BatchNorm's affine parameters at ``bn_lr`` without weight decay, and
    every other trainable parameter at ``lr``. Each group keeps its peak rate in
    ``"peak_lr"`` for the schedule. A unit's threshold is ``μ − β σ / γ``: a large step
    on γ or β throws it to an extreme and the unit dies, so BatchNorm gets an ordinary
    rate even where latent binary weights need a large one."""
    bn_ids = {id(p) for m in _bns(model) for p in m.parameters(recurse=False)}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in bn_ids]
    bn = [p for p in model.parameters() if p.requires_grad and id(p) in bn_ids]
    groups = []
    if rest:
        groups.append({"params": rest, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay,
                       "name": "weights"})
    if bn:
        groups.append({"params": bn, "lr": bn_lr, "peak_lr": bn_lr, "weight_decay": 0.0,
                       "name": "batchnorm"})
    return groups


def _make_opt(model, opt, lr, bn_lr, momentum, weight_decay):
    groups = _param_groups(model, lr, bn_lr, weight_decay)
    if opt == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def _set_lr(opt, factor):
    for g in opt.param_groups:
        g["lr"] = g["peak_lr"] * factor


def _train_params(model):
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------

def fit(model: nn.Module, data, method: str = "sgd", *, epochs: int = 10,
        lr: Optional[float] = None, optimizer: Optional[str] = None,
        bn_lr: Optional[float] = None, batch_size: int = 128, momentum: float = 0.9,
        weight_decay: float = 0.0, seed: int = 0, quiet: bool = False,
        replicas: int = 5, replica_init: str = "independent", gamma0: Optional[float] = None,
        gamma_growth: float = _GAMMA_GROWTH, gamma1: Optional[float] = None,
        replica_noise: float = 0.5, adv_epochs: Optional[int] = None,
        adv_target: float = _ADV_TARGET, adv_fraction: float = 0.1,
        adv_lr: Optional[float] = None, adv_size: Optional[int] = None, sam_rho: float = 0.05,
        eval_batch_size: int = 2048, diagnostics: bool = True,
        log: Optional[Callable[[str], None]] = None) -> History:
    r"""Train ``model`` in place on ``data`` and return its :class:`History`.

    Pittorino et al., ICML 2022, §5; docs/methods.md, "Training". Loss: cross-entropy
    ``ℓ(w) = -log softmax(f_w(x))_y`` (binary cross-entropy on the logit for one-output
    models). Learning rate of every parameter group, per optimiser step ``t`` of ``T``:
    ``η_t = η · ½(1 + cos(π t / T))`` (cosine annealing, Loshchilov & Hutter 2017).

    Optimisers (``optimizer``; default by model kind, :func:`defaults`):

    - ``"sgd"``: SGD with Nesterov momentum ``μ`` and weight decay ``λ``
      (``v ← μ v + g + λ w``; ``w ← w − η_t (g + λ w + μ v)``), the default for both
      kinds: binary models train as well with it at ``lr`` 10 as with Adam at 3e-3, and
      RSGD's replicas need it (docs/training.md, "Choosing the recipe");
    - ``"adam"`` (Kingma & Ba 2015), as BinaryNet (Courbariaux et al. 2016; Hubara et
      al. 2016) and larq's examples use it.

    Parameters sit in two groups: BatchNorm's γ and β at ``bn_lr`` with no weight decay,
    everything else at ``lr`` with weight decay ``λ``. Binary models: ``g`` is the
    straight-through gradient w.r.t. the latent weights, which are clipped to [-1, 1]
    after every step (BinaryNet).

    Methods
    -------
    ``"sgd"``
        The base optimiser on minibatches of a fresh random permutation each epoch.
    ``"rsgd"`` (replicated SGD, Pittorino et al. ICLR 2021; Baldassi et al. PNAS 2020)
        ``y = replicas`` replicas ``w_a``. ``replica_init="independent"`` (default, as the
        authors run it): replica 0 is ``model``'s own initialisation and every other one
        a fresh one (``reset_parameters()`` of every layer under its own seed);
        ``"perturbed"``: copies of ``model`` perturbed by
        ``w_a ← w + replica_noise · std(W) · z`` per tensor (``z ~ N(0,1)``). Each
        replica, with its own minibatch order and optimiser state, minimises

        .. math:: \ell(w_a) + \frac{\gamma_t}{2} \|w_a - \bar w\|^2,
                  \qquad \bar w = \frac1y \sum_a w_a,

        After each optimiser step on the data loss, the coupling's step follows as
        ``w_a ← w_a − min(1, η γ_t) (w_a − w̄)`` (``η`` the peak rate of the
        parameter's group; the centre is recomputed before every synchronous step).
        With plain SGD this is the coupling's gradient step; kept apart from the
        optimiser it is not renormalised by Adam and cannot overshoot the centre. ``γ_t = γ0 · G^{t/E}`` with ``t`` in epochs (fractional
        within one), ``E = epochs`` and ``G = gamma_growth`` (10⁴; ``gamma1`` instead
        sets the per-epoch rate ``γ_t = γ0 (1 + γ1)^t``). ``γ0`` (default) balances the
        two terms at the start: mean data loss over replicas = mean coupling term
        ``½ ‖w_a − w̄‖²`` × γ0, on the first 10 minibatches. This is the authors'
        robust-ensemble schedule; their loss averages over replicas and multiplies the
        learning rate by ``y``, which is the same update as this per-replica form. The
        coupling acts on every trainable parameter. At the end of every epoch ``w̄`` is
        loaded into ``model`` and its BatchNorm statistics are recomputed on the
        training data (:func:`recompute_bn_stats`); for binary models the solution is
        ``sign(w̄)`` of the mean latent weights.
    ``"adv"`` (Liu et al. NeurIPS 2020, §4)
        Pre-training on the training set plus :func:`adversarial_copy` of it (uniform
        random labels, ``adv_fraction`` of each image's pixels zeroed; of a seeded random
        subset of ``adv_size`` images if given, for models that cannot memorise a whole
        training set of random labels in reasonable time; a subset copy is repeated
        ``n // adv_size`` times so that random and true labels weigh the same) at the constant
        rate ``adv_lr`` (default ``lr``) with no weight decay, until the random-label
        copy's train error is at most ``adv_target`` (default 5 %) or after
        ``adv_epochs`` epochs (default ``max(50, 5 · epochs)``), whichever comes first;
        then ``epochs`` epochs on the true labels with a fresh optimiser and schedule.
        ``History.diagnostics["random_labels_fitted"]`` says whether the target was met.
    ``"sam"`` (Foret et al. ICLR 2021, Alg. 1) **[ours]**
        ``ε = ρ g / ‖g‖`` (global norm over all parameters), gradient
        ``g' = ∇ℓ(w + ε)`` (BatchNorm running statistics not updated on this pass), then
        the base optimiser's step at ``w`` with ``g'``.

    Parameters
    ----------
    model : a torch module mapping a float32 batch to ``(batch, classes)`` logits.
    data : a :class:`~bnn_toroid.datasets.Dataset` or an ``(x, y)`` pair of arrays.
        ``x`` is used as given, cast to float32 per batch.
    lr, bn_lr, optimizer : peak learning rates of the weights and of BatchNorm, and the
        optimiser (``None``: :func:`defaults` for the model's kind).
    epochs, batch_size, momentum, weight_decay : as in the formulas above (``epochs``
        counts the true-label epochs; ``adv`` adds its pre-training before them).
    replicas, replica_init, gamma0, gamma_growth, gamma1, replica_noise : ``rsgd``'s
        ``y``, start, coupling schedule and (``"perturbed"`` only) initial noise.
    adv_epochs, adv_target, adv_fraction, adv_lr, adv_size : ``adv``'s epoch cap,
        stopping error, fraction of zeroed pixels (Liu et al. use 10 %), learning rate and
        number of random-label images (``None``: one per training image).
    sam_rho : SAM's radius ``ρ`` (Foret et al.'s default 0.05).
    seed : seeds ``torch.manual_seed``, the ``torch.Generator`` for shuffling and
        replicas and the numpy generator for the adversarial copy: equal seeds, equal
        initial models and equal thread counts give bitwise equal weights.
    quiet : no progress bar over epochs (one is drawn only when stderr is a terminal).
    eval_batch_size : batch size of the end-of-epoch evaluation and BN recomputation.
    diagnostics : compute ``History.diagnostics`` at the end (on up to 10 000 samples).
    log : a callable that receives one line per epoch (for long runs' log files).

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
    r = _checked(binary, epochs=epochs, lr=lr, optimizer=optimizer, bn_lr=bn_lr,
                 batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, seed=seed,
                 replicas=replicas, replica_init=replica_init, gamma0=gamma0,
                 gamma_growth=gamma_growth, gamma1=gamma1, replica_noise=replica_noise,
                 adv_epochs=adv_epochs, adv_target=adv_target, adv_fraction=adv_fraction,
                 adv_lr=adv_lr, adv_size=adv_size, sam_rho=sam_rho, eval_batch_size=eval_batch_size)
    optimizer, lr, bn_lr, adv_epochs, adv_lr = (r[k] for k in ("optimizer", "lr", "bn_lr", "adv_epochs", "adv_lr"))

    x, y, num_classes = _to_tensors(data)
    n_out = _check_model(model, x, y, num_classes)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    initial = snapshot(model)
    hist = History(method=method, config=dict(
        epochs=epochs, optimizer=optimizer, lr=lr, bn_lr=bn_lr, batch_size=batch_size,
        momentum=momentum, weight_decay=weight_decay, seed=seed, binary=binary, n_train=len(y)))
    total_epochs = epochs + (adv_epochs if method == "adv" else 0)
    base = dict(opt=optimizer, lr=lr, bn_lr=bn_lr, batch_size=batch_size, momentum=momentum,
                weight_decay=weight_decay, eval_bs=eval_batch_size, log=log)
    extra = {}

    from ._progress import bar as progress
    bar = progress(total_epochs, f"fit[{method}]", quiet, leave=False)
    try:
        if method == "rsgd":
            hist.config.update(replicas=replicas, replica_init=replica_init,
                               gamma_growth=gamma_growth, gamma1=gamma1,
                               replica_noise=replica_noise if replica_init == "perturbed" else None)
            _fit_rsgd(model, x, y, hist, bar, gen, epochs, replicas, replica_init, gamma0,
                      gamma_growth, gamma1, replica_noise, binary, seed, **base)
            extra = {"replica_distance": hist.replica_distance[-1],
                     "replica_hamming": hist.replica_hamming[-1] if hist.replica_hamming else None}
        else:
            if method == "adv" and adv_epochs > 0:
                hist.config.update(adv_epochs=adv_epochs, adv_target=adv_target,
                                   adv_fraction=adv_fraction, adv_lr=adv_lr,
                                   adv_size=len(y) if adv_size is None else min(adv_size, len(y)))
                k = num_classes if num_classes is not None else max(n_out, 2)
                src = x.numpy()
                if adv_size is not None and adv_size < len(src):
                    # a seeded random subset: the random labels a model can memorise
                    pick = np.sort(np.random.default_rng(seed + 7919).permutation(len(src))[:adv_size])
                    src = src[pick]
                x_adv, y_rand = adversarial_copy(src, k, adv_fraction, seed)
                x_adv, y_rand = torch.from_numpy(x_adv), torch.from_numpy(y_rand)
                reps = len(x) // len(x_adv)
                hist.config["adv_repeats"] = max(reps, 1)
                if reps > 1:
                    # repeated so the random labels weigh as much as the true ones: a small
                    # copy among 60,000 true images is otherwise hardly seen (docs/training.md)
                    x_adv_seen, y_rand_seen = x_adv.repeat((reps,) + (1,) * (x.dim() - 1)), y_rand.repeat(reps)
                else:
                    x_adv_seen, y_rand_seen = x_adv, y_rand
                kw = dict(base, lr=adv_lr, bn_lr=bn_lr * adv_lr / lr, weight_decay=0.0)
                _fit_plain(model, torch.cat([x, x_adv_seen]), torch.cat([y, y_rand_seen]), hist, bar,
                           gen, adv_epochs, None, "adv_init", (x, y), (x_adv, y_rand),
                           schedule="constant", stop_below=adv_target, **kw)
                bar.total = len(hist.loss) + epochs
                reached = hist.random_label_error[-1]
                extra = {"random_label_error": reached, "random_labels_fitted": reached <= adv_target,
                         "adv_epochs_run": len(hist.random_label_error)}
                hist.config["adv_epochs_run"] = extra["adv_epochs_run"]
                adv_start = snapshot(model)
            rho = sam_rho if method == "sam" else None
            _fit_plain(model, x, y, hist, bar, gen, epochs, rho,
                       "sgd" if method == "adv" else method, (x, y), None, **base)
    finally:
        bar.close()
    model.eval()
    if diagnostics:
        from .diagnostics import diagnose
        hist.diagnostics = {**diagnose(model, x, initial), **extra}
        if method == "adv" and extra:
            hist.diagnostics["signs_changed_since_adv"] = diagnose(model, x[:1], adv_start)["signs_changed"]
    hist.seconds = time.perf_counter() - t_start
    return hist


def _real(name, v, lo=None, hi=None, lo_open=False, hi_open=False, none=False):
    """A finite real number in a range, or the named error (bools and strings refused)."""
    if v is None and none:
        return
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        rng = ("" if lo is None else f"{'>' if lo_open else '>='} {lo}") + \
              ("" if hi is None else f"{' and ' if lo is not None else ''}{'<' if hi_open else '<='} {hi}")
        raise ValueError(f"fit: {name} must be a finite number {rng}{' or None' if none else ''}, got {v!r}")


def _checked(binary: bool, *, epochs, lr, optimizer, bn_lr, batch_size, momentum, weight_decay, seed,
             replicas, replica_init, gamma0, gamma_growth, gamma1, replica_noise, adv_epochs,
             adv_target, adv_fraction, adv_lr, adv_size, sam_rho, eval_batch_size) -> dict:
    """Every option of :func:`fit` checked, and the defaults that depend on the model's
    kind filled in (``optimizer``, ``lr``, ``bn_lr``, ``adv_epochs``, ``adv_lr``)."""
    if optimizer is not None and (not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS):
        raise ValueError(f"fit: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    d = defaults(binary, None if optimizer is None else optimizer.lower())
    lr = d["lr"] if lr is None else lr
    bn_lr = d["bn_lr"] if bn_lr is None else bn_lr
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("replicas", replicas, 1)
    _check_int("eval_batch_size", eval_batch_size, 1)
    _check_int("seed", seed, 0)
    if adv_epochs is None:
        adv_epochs = max(50, 5 * epochs)
    _check_int("adv_epochs", adv_epochs, 0)
    adv_lr = lr if adv_lr is None else adv_lr
    for nm, v in (("lr", lr), ("bn_lr", bn_lr), ("adv_lr", adv_lr)):
        _real(nm, v, 0, lo_open=True)
    _real("momentum", momentum, 0, 1, hi_open=True)
    _real("weight_decay", weight_decay, 0)
    _real("gamma0", gamma0, 0, none=True)
    _real("gamma1", gamma1, 0, none=True)
    _real("gamma_growth", gamma_growth, 1)
    if replica_init not in REPLICA_INITS:
        raise ValueError(f"fit: replica_init must be one of {', '.join(REPLICA_INITS)}, got {replica_init!r}")
    _real("replica_noise", replica_noise, 0)
    _real("adv_fraction", adv_fraction, 0, 1)
    if adv_size is not None:
        _check_int("adv_size", adv_size, 1)
    _real("adv_target", adv_target, 0, 1, hi_open=True)
    _real("sam_rho", sam_rho, 0, lo_open=True)
    return {"optimizer": d["optimizer"], "lr": lr, "bn_lr": bn_lr, "adv_epochs": adv_epochs,
            "adv_lr": adv_lr}


# fit's signature, taken once: the options a sweep may set are fit's keyword-only
# arguments, whatever later replaces the name ``fit`` (a test's stand-in, a wrapper).
_FIT_PARAMS = inspect.signature(fit).parameters


def check_options(binary: bool, epochs: int = 10, **options) -> dict:
    """Check :func:`fit` options without training (a sweep checks its whole config before
    the first task). ``options`` are fit's keyword arguments; unknown names raise
    ``TypeError``, bad values the ``ValueError`` that :func:`fit` would raise. Returns the
    options with the kind-dependent defaults filled in."""
    sig = _FIT_PARAMS
    names = {n for n, p in sig.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"quiet", "diagnostics", "log"}
    bad = sorted(set(options) - names)
    if bad:
        raise TypeError(f"fit: unknown option(s) {bad}; known: {', '.join(sorted(names))}")
    args = {n: sig[n].default for n in names}
    args.update(options, epochs=epochs)
    return {**args, **_checked(binary, **args)}


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"fit: {name} must be an integer >= {lo}, got {v!r}")


def _say(log, hist, extra=""):
    if log is not None:
        e = len(hist.loss) - 1
        log(f"epoch {e + 1} [{hist.phase[-1]}] loss {hist.loss[-1]:.4f} "
            f"train error {100 * hist.train_error[-1]:.2f} %{extra}")


def _fit_plain(model, x, y, hist, bar, gen, epochs, rho, phase, eval_data, rand_data, *,
               opt, lr, bn_lr, batch_size, momentum, weight_decay, eval_bs, log,
               schedule="cosine", stop_below=None):
    """Epochs of the base optimiser (rho None) or SAM (rho > 0) on (x, y), recording into
    hist. ``schedule="constant"`` keeps the peak rate; ``stop_below`` ends the phase
    once the error on ``rand_data`` is at most that value."""
    optim = _make_opt(model, opt, lr, bn_lr, momentum, weight_decay)
    params = _train_params(model)
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
        factor = 1.0 if schedule == "constant" else _cosine(1.0, step, total)
        hist.lr.append(lr * factor)
        tot = 0.0
        for s in _batches(n, batch_size):
            idx = perm[s]
            xb, yb = x[idx].to(dev, torch.float32), y[idx].to(dev)
            if schedule != "constant":
                _set_lr(optim, _cosine(1.0, step, total))
            optim.zero_grad(set_to_none=True)
            loss = _loss(model(xb), yb)
            loss.backward()
            if rho is not None:
                _sam_perturbed_grad(model, params, optim, xb, yb, rho, frozen)
            optim.step()
            for m in clippers:
                m.clip_()
            tot += loss.item() * len(yb)
            step += 1
        hist.loss.append(tot / n)
        hist.phase.append(phase)
        hist.train_error.append(_evaluate_tensors(model, *eval_data, eval_bs)[1])
        note = ""
        if rand_data is not None:
            hist.random_label_error.append(_evaluate_tensors(model, *rand_data, eval_bs)[1])
            note = f", random-label error {100 * hist.random_label_error[-1]:.2f} %"
        bar.update(1)
        bar.set_postfix(loss=f"{hist.loss[-1]:.4f}", err=f"{hist.train_error[-1]:.4f}")
        _say(log, hist, note)
        if stop_below is not None and hist.random_label_error[-1] <= stop_below:
            break


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


def _replicas(model, y_rep, how, noise, gen, seed):
    """The replicas' starting points: replica 0 is ``model`` itself (a copy), the others
    fresh initialisations under seeds drawn from ``seed`` (``"independent"``), or noisy
    copies (``"perturbed"``)."""
    reps = [copy.deepcopy(model) for _ in range(y_rep)]
    for a, r in enumerate(reps[1:], start=1):
        if how == "independent":
            state = torch.random.get_rng_state()
            torch.manual_seed(seed * 1000003 + a)
            for m in r.modules():
                if m is not r and callable(getattr(m, "reset_parameters", None)) \
                        and any(p.requires_grad for p in m.parameters(recurse=False)):
                    m.reset_parameters()
            torch.random.set_rng_state(state)
        else:
            with torch.no_grad():
                for p in _train_params(r):
                    if p.numel() > 1 and noise > 0:
                        sd = float(p.std())
                        if sd > 0:
                            p.add_(torch.randn(p.shape, generator=gen).to(p) * (noise * sd))
        for m in _clippers(r):
            m.clip_()
    return reps


@torch.no_grad()
def _balanced_gamma0(reps, rparams, x, y, batch_size, dev, gen):
    """γ0 with ``γ0 · mean_a ½‖w_a − w̄‖² = mean_a ℓ(w_a)`` on up to 10 minibatches (the
    authors' rule: coupling and data loss equal at the start). 0 if the replicas start
    equal (one replica, or no noise)."""
    n = min(len(y), 10 * batch_size)
    idx = torch.randperm(len(y), generator=gen)[:n]
    xb, yb = x[idx].to(dev, torch.float32), y[idx].to(dev)
    losses = []
    for r in reps:
        was = r.training
        r.eval()
        losses.append(float(_loss(r(xb), yb)))
        r.train(was)
    centre = [torch.stack([ps[i] for ps in rparams]).mean(0) for i in range(len(rparams[0]))]
    coupling = np.mean([0.5 * sum(float(((p - c) ** 2).sum()) for p, c in zip(ps, centre))
                        for ps in rparams])
    return float(np.mean(losses) / coupling) if coupling > 0 else 0.0


def _fit_rsgd(model, x, y, hist, bar, gen, epochs, y_rep, how, gamma0, growth, gamma1, noise,
              binary, seed, *, opt, lr, bn_lr, batch_size, momentum, weight_decay, eval_bs, log):
    reps = _replicas(model, y_rep, how, noise, gen, seed)
    rparams = [_train_params(r) for r in reps]
    opts = [_make_opt(r, opt, lr, bn_lr, momentum, weight_decay) for r in reps]
    # which centre tensor each replica parameter is pulled towards
    centre_of = [{id(p): i for i, p in enumerate(ps)} for ps in rparams]
    clippers = [_clippers(r) for r in reps]
    centre_params = _train_params(model)
    binary_idx = _binary_param_indices(model)
    has_bn = bool(_bns(model))
    n = len(y)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    dev = _device(model)
    if gamma0 is None:
        gamma0 = _balanced_gamma0(reps, rparams, x, y, batch_size, dev, gen)
    rate = (1.0 + gamma1) if gamma1 is not None else growth ** (1.0 / epochs)
    hist.config.update(gamma0=gamma0, gamma_rate=rate)

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
            factor = _cosine(1.0, step, total)
            gamma = gamma0 * rate ** (step / steps_per_epoch)
            with torch.no_grad():
                centre = [torch.stack([ps[i] for ps in rparams]).mean(0)
                          for i in range(len(centre_params))]
            for a, r in enumerate(reps):
                idx = perms[a][s]
                xb, yb = x[idx].to(dev, torch.float32), y[idx].to(dev)
                o = opts[a]
                _set_lr(o, factor)
                o.zero_grad(set_to_none=True)
                loss = _loss(r(xb), yb)
                loss.backward()
                pull = _elastic_pull(o, centre_of[a], centre, gamma)
                o.step()
                with torch.no_grad():
                    for p, d in pull:
                        p.sub_(d)
                for m in clippers[a]:
                    m.clip_()
                tot += loss.item() * len(yb)
            step += 1
        hist.loss.append(tot / (n * y_rep))
        hist.phase.append("rsgd")
        hist.gamma.append(gamma0 * rate ** (step / steps_per_epoch))
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
        _say(log, hist, f", gamma {hist.gamma[-1]:.3g}, replica distance "
                        f"{hist.replica_distance[-1]:.3g}"
             + (f", replica Hamming {hist.replica_hamming[-1]:.4f}" if binary_idx else ""))


@torch.no_grad()
def _elastic_pull(opt, index, centre, gamma):
    """RSGD's coupling step ``α (w − w̄)`` of every parameter, from the weights before the
    optimiser's step, with ``α = min(1, η γ)`` and ``η`` the group's peak learning rate.

    Subtracted after the data step, it is the coupling term's gradient step of plain SGD.
    Kept out of the optimiser, it is not rescaled by Adam's per-coordinate
    normalisation (which, fed ``γ (w − w̄)``, lets the pull drown the data gradient once
    γ has grown), and the ``min`` keeps it stable where the gradient form oscillates
    (``η γ > 2``): at ``α = 1`` a replica becomes the centre plus its own data step."""
    out = []
    for g in opt.param_groups:
        alpha = min(1.0, g["peak_lr"] * gamma)
        out += [(p, (p - centre[index[id(p)]]) * alpha) for p in g["params"]]
    return out


def _binary_param_indices(model):
    """Indices (in _train_params order) of the latent weights of binary layers."""
    ids = {id(m.weight) for m in model.modules()
           if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d))}
    return [i for i, p in enumerate(_train_params(model)) if id(p) in ids]
