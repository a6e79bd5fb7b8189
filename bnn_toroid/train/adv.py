"""Adversarial initialisation (Liu, Papailiopoulos & Achlioptas, NeurIPS 2020): fit a
random-label copy of the data first, then the true labels; sharper minima."""
from __future__ import annotations

import numpy as np
import torch

from .data import _batches
from .sgd import _fit_plain


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


def _pretrain(model, x, y, hist, bar, gen, epochs, base, *, classes, adv_epochs, adv_target,
              adv_fraction, adv_lr, adv_size, seed) -> dict:
    """ADV's first phase: the training set plus :func:`adversarial_copy` of it (of a
    seeded subset of ``adv_size`` images, repeated so that random and true labels weigh
    the same) at the constant rate ``adv_lr`` without weight decay, until the copy's
    error is at most ``adv_target`` or after ``adv_epochs`` epochs. ``epochs``: the
    true-label epochs that follow (for the progress bar). Returns the diagnostics it
    adds (``random_label_error``, ``random_labels_fitted``, ``adv_epochs_run``)."""
    hist.config.update(adv_epochs=adv_epochs, adv_target=adv_target,
                       adv_fraction=adv_fraction, adv_lr=adv_lr,
                       adv_size=len(y) if adv_size is None else min(adv_size, len(y)))
    src = x.numpy()
    if adv_size is not None and adv_size < len(src):
        # a seeded random subset: the random labels a model can memorise
        pick = np.sort(np.random.default_rng(seed + 7919).permutation(len(src))[:adv_size])
        src = src[pick]
    x_adv, y_rand = adversarial_copy(src, classes, adv_fraction, seed)
    x_adv, y_rand = torch.from_numpy(x_adv), torch.from_numpy(y_rand)
    reps = len(x) // len(x_adv)
    hist.config["adv_repeats"] = max(reps, 1)
    if reps > 1:
        # repeated so the random labels weigh as much as the true ones: a small
        # copy among 60,000 true images is otherwise hardly seen (docs/training.md)
        x_adv_seen, y_rand_seen = x_adv.repeat((reps,) + (1,) * (x.dim() - 1)), y_rand.repeat(reps)
    else:
        x_adv_seen, y_rand_seen = x_adv, y_rand
    kw = dict(base, lr=adv_lr, bn_lr=base["bn_lr"] * adv_lr / base["lr"], weight_decay=0.0)
    _fit_plain(model, torch.cat([x, x_adv_seen]), torch.cat([y, y_rand_seen]), hist, bar,
               gen, adv_epochs, None, "adv_init", (x, y), (x_adv, y_rand),
               schedule="constant", stop_below=adv_target, **kw)
    bar.total = len(hist.loss) + epochs
    reached = hist.random_label_error[-1]
    extra = {"random_label_error": reached, "random_labels_fitted": reached <= adv_target,
             "adv_epochs_run": len(hist.random_label_error)}
    hist.config["adv_epochs_run"] = extra["adv_epochs_run"]
    return extra
