"""The base optimisers (SGD with Nesterov momentum, Adam), their parameter groups and the
cosine learning-rate schedule."""
from __future__ import annotations

import math

import torch

from .data import _bns


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
