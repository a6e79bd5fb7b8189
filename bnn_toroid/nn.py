"""Torch modules for binary and real-valued networks.

Binary models follow BinaryNet (Courbariaux et al., 2016, arXiv:1602.02830): latent
float weights, ``sign`` in the forward pass and a straight-through estimator in the
backward pass. The sign convention is larq's, ``sign(x) = +1 if x >= 0 else -1``,
also for ``-0.0`` (Pittorino et al., 2022, "Deep Networks on Toroids", docs/methods.md, "Sign convention").

Every model here is an ``nn.Sequential`` of the layers below, so
:meth:`bnn_toroid.BinaryNetwork.from_torch` and the continuous symmetry tools can walk
it layer by layer. User models built from the same layers work too.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._batches import batch_rows, labels as _labels, softmax as _softmax

__all__ = [
    "sign", "sign_ste", "Sign", "glorot_limit", "Normalize", "Scale", "BinaryLinear", "BinaryConv2d",
    "BinaryMLP", "BinaryConvNet", "MLP", "LeNet", "CommitteeMachine", "same_padding",
]


def sign(x: torch.Tensor) -> torch.Tensor:
    """larq's sign: ``+1 if x >= 0 else -1``; ``-0.0 >= 0`` so it maps to ``+1``.

    ``torch.sign`` maps 0 to 0, which would break the integer threshold form.
    """
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    r"""Sign with the clipped straight-through estimator.

    .. math::
        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}, \qquad
        \frac{\partial q}{\partial x} = 1_{|x| \le 1}

    Hubara, Courbariaux et al., "Binarized Neural Networks", NeurIPS 2016 (§1.3); this is
    larq's ``ste_sign`` with ``clip_value=1``.
    """
    return _SignSTE.apply(x)


class Sign(nn.Module):
    """Binary activation: :func:`sign_ste` as a module."""

    def forward(self, x):
        return sign_ste(x)


class Normalize(nn.Module):
    """Input standardisation ``(x - mean) / std`` with fixed statistics.

    ``mean`` and ``std`` are scalars or one value per channel (dim 1 of the input).
    Frozen binary networks fold this into the first layer's thresholds (docs/methods.md, "First layer on real input")
    instead of applying it to the data.
    """

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"Normalize: mean has {mean.numel()} values but std has {std.numel()}")
        if not torch.all(std > 0):
            raise ValueError("Normalize: std must be > 0 everywhere")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _view(self, t, x):
        if t.numel() == 1:
            return t.reshape(())
        return t.reshape((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x):
        x = x.to(torch.float32)
        return (x - self._view(self.mean, x)) / self._view(self.std, x)


class Scale(nn.Module):
    """Multiply by a fixed positive constant (keeps binary logits in a trainable range;
    argmax-invariant, so it does not change the network's predictions)."""

    def __init__(self, value: float):
        super().__init__()
        if not value > 0:
            raise ValueError(f"Scale: value must be > 0, got {value}")
        self.register_buffer("value", torch.tensor(float(value)))

    def forward(self, x):
        return x * self.value


def glorot_limit(fan_in: int, fan_out: int) -> float:
    r"""Half-width of the Glorot (Xavier) uniform initialisation,
    :math:`\sqrt{6 / (\text{fan\_in} + \text{fan\_out})}`.

    Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS 2010. larq's binary layers default to ``glorot_uniform`` latent
    weights; BinaryNet (Courbariaux et al. 2016) uses the same scale. For a convolution
    the fans count the kernel's receptive field: ``C·kh·kw`` and ``F·kh·kw``.
    """
    return math.sqrt(6.0 / (fan_in + fan_out))


def _glorot_(weight: torch.Tensor):
    """Latent weights ~ U(-L, L), L = :func:`glorot_limit` of the layer's fans. The scale
    matters for binary layers: with clipping at ±1, a latent weight at U(-1, 1) needs an
    update ~15x larger to change sign than one at this scale (docs/training.md)."""
    out_f, in_f = weight.shape[0], weight.shape[1]
    field = int(math.prod(weight.shape[2:])) if weight.dim() > 2 else 1
    lim = glorot_limit(in_f * field, out_f * field)
    with torch.no_grad():
        weight.uniform_(-lim, lim)


class BinaryLinear(nn.Linear):
    """Dense layer with ±1 weights ``sign(W_latent)``; inputs are used as given.

    ``y = x sign(W)^T + b``. The latent weights are what the optimiser updates
    (BinaryNet); :meth:`clip_` keeps them in [-1, 1]. They start at Glorot uniform scale
    (:func:`glorot_limit`), as in larq and BinaryNet; the bias, if any, at 0.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self):
        _glorot_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def binary_weight(self) -> torch.Tensor:
        return sign_ste(self.weight)

    def forward(self, x):
        return F.linear(x, self.binary_weight(), self.bias)

    @torch.no_grad()
    def clip_(self):
        self.weight.clamp_(-1.0, 1.0)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow/larq ``same`` padding along one axis: (before, after).

    ``out = ceil(size / stride)``, ``total = max((out - 1) * stride + kernel - size, 0)``,
    with the odd extra pixel after, as in TensorFlow.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class BinaryConv2d(nn.Conv2d):
    """2-D convolution with ±1 weights, NCHW, ``valid`` or ``same`` padding.

    ``same`` pads like TensorFlow (the odd pixel goes after) with the constant
    ``pad_value``: 0.0 (zeros, the default) or 1.0 (larq's ``pad_values=1``, which keeps
    a binary input binary: padded pixels read as +1).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="valid",
                 pad_value: float = 0.0, bias: bool = False):
        if padding not in ("valid", "same"):
            raise ValueError(f"BinaryConv2d: padding must be 'valid' or 'same', got {padding!r}")
        if pad_value not in (0, 1):
            raise ValueError(f"BinaryConv2d: pad_value must be 0 or 1, got {pad_value!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)
        self.pad_mode = padding
        self.pad_value = float(pad_value)

    def reset_parameters(self):
        """Glorot uniform latent weights (fans over the receptive field), zero bias."""
        _glorot_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def binary_weight(self) -> torch.Tensor:
        return sign_ste(self.weight)

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding for an input of h × w."""
        if self.pad_mode == "valid":
            return 0, 0, 0, 0
        t, b = same_padding(h, self.kernel_size[0], self.stride[0])
        l, r = same_padding(w, self.kernel_size[1], self.stride[1])
        return t, b, l, r

    def forward(self, x):
        t, b, l, r = self.pads(x.shape[-2], x.shape[-1])
        if t or b or l or r:
            x = F.pad(x, (l, r, t, b), value=self.pad_value)
        return F.conv2d(x, self.binary_weight(), self.bias, self.stride)

    @torch.no_grad()
    def clip_(self):
        self.weight.clamp_(-1.0, 1.0)


class _Model(nn.Sequential):
    """A named stack of layers. Slicing gives a plain ``nn.Sequential``: torch rebuilds a
    slice by calling the class with the sub-modules, which a model's constructor (taking
    sizes) cannot accept.

    The evaluation methods mirror :class:`bnn_toroid.BinaryNetwork`'s, with the same
    names, shapes and rules: :meth:`predict` (logits), :meth:`predict_classes`,
    :meth:`predict_proba`, :meth:`error` and :meth:`score` (accuracy). They take numpy
    arrays or tensors ``(N, *sample_shape)`` of finite numbers, run in eval mode without
    gradients (on a copy when the model is training: its mode is never changed) and
    return numpy float64 / int64 arrays.
    """

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return nn.Sequential(*list(self)[idx])
        return super().__getitem__(idx)

    def _samples(self, x, what: str) -> torch.Tensor:
        t = x.detach() if isinstance(x, torch.Tensor) else None
        if t is None:
            import numpy as np

            a = np.asarray(x)
            if a.dtype.kind not in "iuf":
                raise TypeError(f"{what}: x has dtype {a.dtype}; expected real numbers (an integer "
                                "or float array)")
            t = torch.from_numpy(np.array(a, dtype=np.float64 if a.dtype.kind == "f" else a.dtype))
        elif t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{what}: x has dtype {t.dtype}; expected real numbers")
        if t.dim() < 1:
            raise ValueError(f"{what}: x is a scalar; expected a batch (N, ...)")
        if t.is_floating_point() and not torch.isfinite(t).all():
            n_nan, n_inf = int(t.isnan().sum()), int(t.isinf().sum())
            parts = [f"{c} {w}" for c, w in ((n_nan, "NaN"), (n_inf, "infinite")) if c]
            raise ValueError(f"{what}: x holds {' and '.join(parts)} value"
                             f"{'s' if n_nan + n_inf > 1 else ''}; expected finite input")
        return t

    @torch.no_grad()
    def predict(self, x, batch_size: int = 4096):
        """Logits, float64 numpy (N, classes); N = 0 gives (0, classes)."""
        import copy

        import numpy as np


        step = batch_rows(batch_size, "predict")
        t = self._samples(x, "predict")
        m = copy.deepcopy(self).eval() if self.training else self
        dtype = next((p.dtype for p in self.parameters()), torch.float32)
        outs = []
        try:
            for lo in range(0, max(t.shape[0], 1), step):
                out = m(t[lo:lo + step].to(dtype))
                # explicit sizes: reshape(0, -1) is ambiguous, and N = 0 is allowed
                outs.append(out.reshape(out.shape[0], math.prod(out.shape[1:])).double().cpu().numpy())
        except RuntimeError as e:
            raise ValueError(f"predict: x holds samples of shape {tuple(t.shape[1:])}, which the "
                             f"model cannot take ({str(e).splitlines()[0]}); expected samples the "
                             "model was built for") from None
        return np.concatenate(outs)

    def predict_classes(self, x, batch_size: int = 4096):
        """``argmax`` of the logits (first index on ties), int64 (N,)."""
        return self.predict(x, batch_size).argmax(axis=1)

    def predict_proba(self, x, batch_size: int = 4096):
        """Softmax of the logits, float64 (N, classes), rows summing to 1 (scikit-learn's
        ``predict_proba``); its argmax is :meth:`predict_classes`."""

        return _softmax(self.predict(x, batch_size))

    def _wrong(self, x, y, batch_size, what):
        import numpy as np


        logits = self.predict(x, batch_size)
        y = _labels(y, logits.shape[0], logits.shape[1], what)
        if logits.shape[0] == 0:
            raise ValueError(f"{what}: x holds 0 samples; the {what} of an empty set is "
                             "undefined, expected at least one sample")
        return int(np.count_nonzero(logits.argmax(axis=1) != y)), logits.shape[0]

    def error(self, x, y, batch_size: int = 4096) -> float:
        """Fraction of samples whose predicted class differs from ``y`` (integer class
        indices (N,)); at least one sample."""
        wrong, n = self._wrong(x, y, batch_size, "error")
        return wrong / n

    def score(self, x, y, batch_size: int = 4096) -> float:
        """Accuracy, ``1 - error(x, y)`` (scikit-learn's ``score`` for classifiers)."""
        wrong, n = self._wrong(x, y, batch_size, "score")
        return (n - wrong) / n


def _dense_stack(sizes, batchnorm: bool, binary: bool, bias: bool = False) -> list:
    """Dense layers ``sizes[0] → … → sizes[-1]``; every hidden one followed by optional
    BatchNorm and its activation (Sign for binary, ReLU for real), the last one bare."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(BinaryLinear(sizes[i], sizes[i + 1], bias=bias) if binary
                      else nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(Sign() if binary else nn.ReLU())
    return layers


def _check_sizes(sizes: Sequence[int], what: str) -> list[int]:
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"{what}: sizes must list at least 2 positive widths "
                         f"(input, ..., outputs), got {list(sizes)}")
    return sizes


class BinaryMLP(_Model):
    """Fully binary MLP: ``[Normalize] Flatten [Sign] (BinaryLinear [BN] Sign)* BinaryLinear Scale``.

    ``sizes = [in, h1, ..., out]``. Hidden units are ``sign(BN(W x))``; the output layer
    is binary too (docs/methods.md, "Binary networks"), followed by a fixed ``Scale(1/sqrt(fan_in))`` so that
    cross-entropy sees logits of order one. ``binarize_input=True`` feeds
    ``sign(x)`` to the first layer instead of the real-valued input.
    """

    def __init__(self, sizes: Sequence[int], batchnorm: bool = True, input_norm=None,
                 binarize_input: bool = False, bias: bool = False):
        sizes = _check_sizes(sizes, "BinaryMLP")
        layers: list[nn.Module] = []
        if input_norm is not None:
            layers.append(Normalize(*input_norm))
        layers.append(nn.Flatten())
        if binarize_input:
            layers.append(Sign())
        layers += _dense_stack(sizes, batchnorm, binary=True, bias=bias)
        layers.append(Scale(1.0 / math.sqrt(sizes[-2])))
        super().__init__(*layers)
        self.sizes = sizes


class BinaryConvNet(_Model):
    """The paper's binary conv net (Pittorino et al. 2022, §5):
    conv 20@5×5 → maxpool 2 → sign → conv 50@5×5 → maxpool 2 → sign → dense layers.

    ``input_shape = (C, H, W)``; ``channels`` and ``dense`` set the widths. BatchNorm
    sits before each sign when ``batchnorm`` is true.
    """

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, channels=(20, 50),
                 dense=(500,), kernel_size: int = 5, batchnorm: bool = True,
                 input_norm=None, padding: str = "valid", pad_value: float = 0.0):
        c, h, w = (int(v) for v in input_shape)
        layers: list[nn.Module] = []
        if input_norm is not None:
            layers.append(Normalize(*input_norm))
        for out_c in channels:
            conv = BinaryConv2d(c, out_c, kernel_size, padding=padding, pad_value=pad_value)
            layers.append(conv)
            if padding == "valid":
                h, w = h - kernel_size + 1, w - kernel_size + 1
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"BinaryConvNet: input {tuple(input_shape)} is too small "
                                 f"for {len(channels)} conv/pool stages")
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_c))
            layers.append(Sign())
            c = out_c
        layers.append(nn.Flatten())
        sizes = [c * h * w, *dense, num_classes]
        layers += _dense_stack(sizes, batchnorm, binary=True)
        layers.append(Scale(1.0 / math.sqrt(sizes[-2])))
        super().__init__(*layers)
        self.input_shape = tuple(int(v) for v in input_shape)


class MLP(_Model):
    """Real-valued ReLU MLP: ``Flatten (Linear [BN] ReLU)* Linear`` (the paper uses
    hidden widths 2×512 on MNIST)."""

    def __init__(self, sizes: Sequence[int], batchnorm: bool = False, input_norm=None):
        sizes = _check_sizes(sizes, "MLP")
        layers: list[nn.Module] = []
        if input_norm is not None:
            layers.append(Normalize(*input_norm))
        layers.append(nn.Flatten())
        layers += _dense_stack(sizes, batchnorm, binary=False)
        super().__init__(*layers)
        self.sizes = sizes


class LeNet(_Model):
    """Real-valued LeNet: conv 20@5×5 → ReLU → maxpool 2 → conv 50@5×5 → ReLU →
    maxpool 2 → dense 500 → ReLU → dense ``num_classes`` (optional BatchNorm after each
    conv/dense hidden layer)."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10, channels=(20, 50),
                 dense=(500,), batchnorm: bool = False, input_norm=None):
        c, h, w = (int(v) for v in input_shape)
        layers: list[nn.Module] = []
        if input_norm is not None:
            layers.append(Normalize(*input_norm))
        for out_c in channels:
            layers.append(nn.Conv2d(c, out_c, 5))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_c))
            layers.append(nn.ReLU())
            layers.append(nn.MaxPool2d(2))
            h, w = (h - 4) // 2, (w - 4) // 2
            if h < 1 or w < 1:
                raise ValueError(f"LeNet: input {tuple(input_shape)} is too small")
            c = out_c
        layers.append(nn.Flatten())
        sizes = [c * h * w, *dense, num_classes]
        layers += _dense_stack(sizes, batchnorm, binary=False)
        super().__init__(*layers)
        self.input_shape = tuple(int(v) for v in input_shape)


class CommitteeMachine(_Model):
    r"""Binary committee machine (docs/methods.md, "Committee machine"): ``y = sign(Σ_k sign(w_k · sign(x)))``.

    ``H`` hidden ±1 perceptrons on the binarised input; the output weights are fixed to
    +1 (not trained). For two-class training the logits are ``(-s, +s) / sqrt(H)`` with
    ``s = Σ_k y_k``, so class 1 is predicted iff the majority vote is +1 (use odd ``H``).
    Engel & Van den Broeck, "Statistical Mechanics of Learning" (2001), ch. 12.
    """

    def __init__(self, n_in: int, hidden: int = 101, batchnorm: bool = False):
        if n_in < 1 or hidden < 1:
            raise ValueError(f"CommitteeMachine: sizes must be positive, got {n_in}, {hidden}")
        out = BinaryLinear(hidden, 2)
        with torch.no_grad():
            out.weight.copy_(torch.stack([-torch.ones(hidden), torch.ones(hidden)]))
        out.weight.requires_grad_(False)
        layers = [nn.Flatten(), Sign(), BinaryLinear(n_in, hidden)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [Sign(), out, Scale(1.0 / math.sqrt(hidden))]
        super().__init__(*layers)
        self.sizes = [n_in, hidden, 2]
