"""Data and models as :func:`~bnn_toroid.train.fit` takes them: checked tensors,
minibatches, the loss, evaluation and BatchNorm statistics."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as bnn
from ..datasets import Dataset


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
