"""Replicated SGD (Pittorino et al., ICLR 2021; Baldassi et al., PNAS 2020): replicas
elastically coupled to their centre, which is the solution."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .. import nn as bnn
from .data import _batches, _bns, _clippers, _device, _evaluate_tensors, _loss, recompute_bn_stats
from .optim import _cosine, _make_opt, _set_lr, _train_params
from .sgd import _say


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
