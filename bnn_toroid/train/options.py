"""The recipe's defaults and the checks of :func:`~bnn_toroid.train.fit`'s options."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

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


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"fit: {name} must be an integer >= {lo}, got {v!r}")
