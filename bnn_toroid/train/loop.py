"""The training loop: :func:`fit` checks its options, runs one method's phases
(:mod:`.sgd`, :mod:`.adv`, :mod:`.rsgd`) and reports the result's health
(:mod:`.history`); :func:`check_options` checks a configuration without training."""
from __future__ import annotations

import inspect
import time
from typing import Callable, Optional

import torch
from torch import nn

from .._progress import bar as progress
from ..diagnostics import snapshot
from .adv import _pretrain
from .data import _check_model, _to_tensors, is_binary
from .history import History, health
from .options import _ADV_TARGET, _GAMMA_GROWTH, METHODS, _checked
from .rsgd import _fit_rsgd
from .sgd import _fit_plain

__all__ = ["fit", "check_options"]


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
    extra, adv_start = {}, None

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
                extra = _pretrain(model, x, y, hist, bar, gen, epochs, base,
                                  classes=num_classes if num_classes is not None else max(n_out, 2),
                                  adv_epochs=adv_epochs, adv_target=adv_target,
                                  adv_fraction=adv_fraction, adv_lr=adv_lr, adv_size=adv_size, seed=seed)
                adv_start = snapshot(model)
            rho = sam_rho if method == "sam" else None
            _fit_plain(model, x, y, hist, bar, gen, epochs, rho,
                       "sgd" if method == "adv" else method, (x, y), None, **base)
    finally:
        bar.close()
    model.eval()
    if diagnostics:
        hist.diagnostics = health(model, x, initial, extra, adv_start)
    hist.seconds = time.perf_counter() - t_start
    return hist


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
