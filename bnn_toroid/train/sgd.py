"""Epochs of the base optimiser (``"sgd"``) or of sharpness-aware minimisation
(``"sam"``, Foret et al., ICLR 2021) on one data set; ADV's two phases run on them too."""
from __future__ import annotations

import torch

from .data import _batches, _clippers, _device, _evaluate_tensors, _loss
from .optim import _FrozenBN, _cosine, _make_opt, _set_lr, _train_params


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
