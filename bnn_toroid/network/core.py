"""The frozen binary network and its evaluation by the packed kernels.

One object flows through the package: a :class:`BinaryNetwork`. It holds ±1 weight
matrices (bit-packed for the kernels), integer thresholds and an output layer.
:class:`NetworkStack` holds S networks of one architecture (perturbations, points of a
path) and evaluates all of them in one kernel launch per layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import kernels as K
from .._batches import batch_rows, labels as _labels, softmax as _softmax
from .chain import DenseChain
from .first import RealFirstLayer
from .layers import Conv2d, Dense, MaxPool2d, NetworkError
from .layout import Layout, layout_of

LAYOUTS = ("flat", "NHWC", "NCHW")

# set while __init__ runs, fixed afterwards: the packed parameters are derived from them
_FIXED = frozenset({"layers", "input_shape", "input_layout", "binarize_input", "input_scale",
                    "output_geom"})


@dataclass(frozen=True)
class _Geom:
    """Shape of a layer's input: flat (k,) or spatial (h, w, c)."""

    shape: tuple

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))


class BinaryNetwork:
    r"""A frozen binary network in integer threshold form (docs/methods.md, "Integer threshold form").

    Hidden unit k of a layer outputs ``+1 iff h_k = w_k·x >= T_k``; the last layer gives
    logits ``out_scale * h + out_bias``. Weights are ±1 and stored bit-packed
    (``bit 1 = -1``), so evaluation is XNOR-popcount throughout; with binary inputs every
    pre-activation is an exact integer (Hubara et al. 2016; Pittorino et al. 2022, §2).

    Args:
        layers: :class:`Dense`, :class:`Conv2d` and :class:`MaxPool2d` in order; the last
            is a :class:`Dense` without thresholds.
        input_shape: one sample's shape as passed to :meth:`predict`.
        input_layout: ``"flat"`` (samples are flattened in the order given),
            ``"NHWC"`` or ``"NCHW"`` (images; evaluated as NHWC).
        binarize_input: feed ``sign(x)`` (``x >= 0 -> +1``) to the first layer.
        input_scale: positive factors multiplied into real inputs, per channel (images)
            or per feature (flat); for input normalisations that don't fold into a
            threshold.

    A network is immutable once built: ``layers`` is a tuple of immutable layers with
    read-only arrays, and assigning ``layers``, ``input_shape``, ``input_layout``,
    ``binarize_input`` or ``input_scale`` raises ``AttributeError``. The packed weights
    the kernels read are made once, here, so an edit in place would have left
    :meth:`predict` answering for the old weights while :meth:`save` wrote the new
    ones. Make a changed copy with :meth:`with_layers` instead.
    """

    def __init__(self, layers, input_shape, input_layout: str = "flat",
                 binarize_input: bool = False, input_scale=None):
        self.layers = tuple(layers)
        if input_layout not in LAYOUTS:
            raise NetworkError(f"input_layout must be one of {LAYOUTS}, got {input_layout!r}")
        self.input_shape = tuple(int(v) for v in input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise NetworkError(f"input_shape must be positive sizes, got {input_shape}")
        self.input_layout = input_layout
        self.binarize_input = bool(binarize_input)
        self.input_scale = None if input_scale is None else np.array(input_scale, np.float64)
        if self.input_scale is not None:
            self.input_scale.flags.writeable = False
        self._geoms = self._check()
        self._layouts = self._layouts_of()
        self._params = [self._pack(i) for i in range(len(self.layers))]
        self._stack = None
        self._built = True

    def __setattr__(self, name, value):
        if name in _FIXED and self.__dict__.get("_built"):
            raise AttributeError(f"BinaryNetwork.{name}: a network is immutable once built (it "
                                 "keeps packed copies of its weights); make a new one, e.g. "
                                 "net.with_layers(layers)")
        object.__setattr__(self, name, value)

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "_layouts" not in state:  # pickled before networks kept their layouts
            self._layouts = self._layouts_of()
        if self.input_scale is not None:  # unpickled arrays come back writable
            self.input_scale.flags.writeable = False

    # ------------------------------------------------------------------ structure
    def _first_geom(self) -> _Geom:
        if self.input_layout == "flat":
            return _Geom((int(np.prod(self.input_shape)),))
        if len(self.input_shape) != 3:
            raise NetworkError(f"input_layout {self.input_layout} needs a 3-D input_shape, "
                               f"got {self.input_shape}")
        if self.input_layout == "NCHW":
            c, h, w = self.input_shape
            return _Geom((h, w, c))
        return _Geom(self.input_shape)

    def _check(self):
        if not self.layers:
            raise NetworkError("a network needs at least one layer")
        geom = self._first_geom()
        if self.input_scale is not None:
            if self.binarize_input:
                raise NetworkError("input_scale applies to real inputs; it is meaningless with binarize_input")
            n = geom.shape[-1] if geom.spatial else geom.features
            if self.input_scale.shape not in ((n,), ()) or not (self.input_scale > 0).all():
                raise NetworkError(f"input_scale: expected {n} positive values, got shape "
                                   f"{self.input_scale.shape}")
        geoms = []
        prev = None
        for i, layer in enumerate(self.layers):
            real = i == 0 and not self.binarize_input
            last = i == len(self.layers) - 1
            where = f"layer {i} ({type(layer).__name__})"
            geoms.append(geom)
            if isinstance(layer, Dense):
                if layer.weights.shape[1] != geom.features:
                    raise NetworkError(f"{where}: expects {layer.weights.shape[1]} inputs but "
                                       f"receives {geom.features} (shape {geom.shape})")
                geom = _Geom((layer.units,))
            elif isinstance(layer, Conv2d):
                if not geom.spatial:
                    raise NetworkError(f"{where}: needs an image input, got flat shape {geom.shape}")
                h, w, c = geom.shape
                _, kh, kw, cin = layer.weights.shape
                if cin != c:
                    raise NetworkError(f"{where}: filters take {cin} channels but the input has {c}")
                if not real:
                    if not (np.ndim(layer.pad_value) == 0 and layer.pad_value in (0.0, 1.0)):
                        raise NetworkError(f"{where}: pad_value on binary input must be 0 or 1, "
                                           f"got {layer.pad_value!r}")
                elif np.ndim(layer.pad_value) == 1 and np.shape(layer.pad_value) != (c,):
                    raise NetworkError(f"{where}: pad_value needs one value per channel ({c})")
                try:
                    _, (ho, wo) = K.conv_pads(h, w, kh, kw, layer.stride, layer.padding)
                except ValueError as e:
                    raise NetworkError(f"{where}: {e}") from None
                geom = _Geom((ho, wo, layer.units))
            elif isinstance(layer, MaxPool2d):
                if not isinstance(prev, Conv2d) or prev.threshold is None:
                    raise NetworkError(f"{where}: a pool must follow a hidden Conv2d")
                h, w, c = geom.shape
                if layer.min_channels is not None and layer.min_channels.shape != (c,):
                    raise NetworkError(f"{where}: min_channels needs {c} entries, got "
                                       f"{layer.min_channels.shape}")
                ho, wo = (h - layer.size) // layer.stride + 1, (w - layer.size) // layer.stride + 1
                if ho < 1 or wo < 1:
                    raise NetworkError(f"{where}: a {layer.size}×{layer.size} pool does not fit {h}×{w}")
                geom = _Geom((ho, wo, c))
            else:
                raise NetworkError(f"{where}: unsupported layer type {type(layer).__name__}")
            if isinstance(layer, (Dense, Conv2d)):
                if last and layer.threshold is not None:
                    raise NetworkError(f"{where}: the last layer gives logits; it takes no threshold")
                if last and not isinstance(layer, Dense):
                    raise NetworkError(f"{where}: the last layer must be Dense")
                if not last and layer.threshold is None:
                    raise NetworkError(f"{where}: hidden layers need thresholds")
                if (layer.threshold is not None and layer.threshold.dtype != np.int64 and not real):
                    raise NetworkError(f"{where}: thresholds on binary input must be integers "
                                       f"(got {layer.threshold.dtype}); only a first layer on "
                                       "real input may have real thresholds")
            prev = layer
        if isinstance(self.layers[-1], MaxPool2d):
            raise NetworkError("the last layer must be Dense")
        self.output_geom = geom
        return geoms

    def _layouts_of(self):
        return tuple(layout_of(layer, g.shape, i == 0 and not self.binarize_input)
                     for i, (layer, g) in enumerate(zip(self.layers, self._geoms)))

    def layout(self, i: int) -> Layout:
        """The packed layout of layer i (:mod:`.layout`): where each of its weights (or,
        for a pool, each min-pooled channel) sits in :meth:`packed_params`' words, with
        ``pack``, ``unpack``, ``locate`` (flat weight index → word, bit) and ``flip``."""
        return self._layouts[i]

    def _pack(self, i):
        """Parameters of layer i as the kernels want them, with a leading network axis."""
        layer, lay = self.layers[i], self._layouts[i]
        if isinstance(layer, MaxPool2d):
            c = lay.channels
            mask = layer.min_channels if layer.min_channels is not None else np.zeros(c, bool)
            return {"mask": lay.pack(mask)[None]}
        p = {"w": lay.pack(layer.weights)[None]}
        # writable copies: the layer's arrays are read-only, and a read-only array would
        # make Numba compile a second version of every kernel it reaches
        if layer.threshold is not None:
            p["T"] = np.array(layer.threshold[None])
        else:
            p["scale"], p["bias"] = np.array(layer.out_scale[None]), np.array(layer.out_bias[None])
        return p

    def __getstate__(self):
        # the cached stack holds float copies of the first layer: rebuilt on demand
        state = self.__dict__.copy()
        state["_stack"] = None
        return state

    # ------------------------------------------------------------------ properties
    @property
    def n_weights(self) -> int:
        """Number of ±1 weights (the Hamming space's dimension)."""
        return int(sum(l.weights.size for l in self.layers if not isinstance(l, MaxPool2d)))

    @property
    def num_classes(self) -> int:
        return self.layers[-1].units

    def weight_layers(self) -> list[int]:
        """Indices of the layers that hold weights (Dense and Conv2d)."""
        return [i for i, l in enumerate(self.layers) if not isinstance(l, MaxPool2d)]

    def summary(self) -> str:
        """A readable table of the layers: kind, shape, fan-in, weights, output."""
        rows = [f"BinaryNetwork: input {self.input_shape} ({self.input_layout}"
                f"{', binarised' if self.binarize_input else ', real-valued'}), "
                f"{self.n_weights} binary weights"]
        for i, (layer, g) in enumerate(zip(self.layers, self._geoms)):
            out = self._geoms[i + 1].shape if i + 1 < len(self.layers) else self.output_geom.shape
            if isinstance(layer, Dense):
                kind = "dense, logits" if layer.threshold is None else "dense, h >= T"
                desc = f"{layer.weights.shape[1]} → {layer.units}"
            elif isinstance(layer, Conv2d):
                kind = "conv, h >= T"
                f, kh, kw, c = layer.weights.shape
                desc = (f"{f}@{kh}×{kw}×{c} stride {layer.stride} {layer.padding}"
                        f"{' pad ' + str(layer.pad_value) if layer.padding == 'same' else ''}")
            else:
                kind = "maxpool"
                n_min = 0 if layer.min_channels is None else int(layer.min_channels.sum())
                desc = f"{layer.size}×{layer.size} stride {layer.stride}" + (f", {n_min} min-pooled" if n_min else "")
            rows.append(f"  [{i}] {kind:15s} {desc:40s} → {out}")
        return "\n".join(rows)

    def __repr__(self):
        return self.summary()

    def same_architecture(self, other) -> bool:
        """True when ``other`` has the same layer types, shapes and hyper-parameters."""
        if not isinstance(other, BinaryNetwork):
            return False
        if (self.input_shape, self.input_layout, self.binarize_input) != (
                other.input_shape, other.input_layout, other.binarize_input):
            return False
        for a, b in zip(self.layers, other.layers, strict=False):
            if type(a) is not type(b):
                return False
            if isinstance(a, MaxPool2d):
                if (a.size, a.stride) != (b.size, b.stride):
                    return False
            else:
                if a.weights.shape != b.weights.shape or (a.threshold is None) != (b.threshold is None):
                    return False
                if isinstance(a, Conv2d) and (a.stride, a.padding) != (b.stride, b.padding):
                    return False
        return len(self.layers) == len(other.layers)

    # ------------------------------------------------------------------ evaluation
    def prepare_input(self, x, what: str = "predict"):
        """Validate ``x`` (N, *input_shape) and return it NHWC or flat, as the first layer
        reads it: packed words when binarised, otherwise a real array. Errors name
        ``what`` (the calling method) and the argument ``x``."""
        return _prepare_input(self, x, what)

    def _as_stack(self) -> "NetworkStack":
        # kept: the stack caches the unpacked first layer on real input
        if self._stack is None:
            self._stack = NetworkStack(self, self._params)
        return self._stack

    def predict(self, x, batch_size: int = 4096) -> np.ndarray:
        """Logits, float64 (N, classes): exact integers when the output layer has no
        affine (``out_scale = 1``, ``out_bias = 0``). ``x`` is (N, *input_shape) of
        finite integers or floats (NaN and ±inf are refused); N = 0 gives (0, classes)."""
        return self._as_stack().predict(x, batch_size)[0]

    def predict_classes(self, x, batch_size: int = 4096) -> np.ndarray:
        """``argmax`` of the logits (first index on ties, as numpy and torch), int64 (N,)."""
        return self.predict(x, batch_size).argmax(axis=1)

    def predict_proba(self, x, batch_size: int = 4096) -> np.ndarray:
        """Softmax of the logits, float64 (N, classes), rows summing to 1 (as
        scikit-learn's ``predict_proba``). Its argmax is :meth:`predict_classes`. The
        numbers are the network's own, not calibrated: without an output scale the
        logits are integer dot products, and the probabilities are close to one-hot."""
        return _softmax(self.predict(x, batch_size))

    def error(self, x, y, batch_size: int = 4096) -> float:
        """Fraction of samples whose predicted class differs from ``y`` (integer class
        indices (N,)); at least one sample."""
        return float(self._as_stack().errors(x, y, batch_size)[0])

    def score(self, x, y, batch_size: int = 4096) -> float:
        """Accuracy, ``1 - error(x, y)``: the fraction of samples classified as ``y``
        (scikit-learn's ``score`` for classifiers); at least one sample."""
        wrong, n = self._as_stack()._wrong(x, y, batch_size, "score")
        return float((n - wrong[0]) / n)

    def preactivations(self, x) -> list:
        """Per weight layer, the pre-activations ``h`` before threshold or pool: int64
        (N, units) or (N, Ho, Wo, F) NHWC; float64 for a first layer on real input."""
        return self._as_stack()._forward(self.prepare_input(x), collect=True)[1]

    def hidden_outputs(self, x) -> list:
        """Per layer except the last, its ±1 output as int8 (flat or NHWC)."""
        acts = self._as_stack()._forward(self.prepare_input(x), collect=True)[2]
        return [K.unpack_bits(a[0], g.shape[-1]) for a, g in zip(acts, self._geoms[1:])]

    def packed_params(self) -> list:
        """The kernels' view of each layer (leading axis of length 1): ``w`` packed weights
        in the layer's :meth:`layout` (a dense first layer on real input packs its rows
        flat, in NHWC feature order; the others per pixel), ``T`` thresholds,
        ``scale``/``bias`` of the output, ``mask`` of min-pooled channels. New dicts of
        read-only views: edit copies, and build networks with the layer classes (or a
        :class:`NetworkStack` from edited copies)."""
        out = []
        for p in self._params:
            q = {}
            for k, v in p.items():
                q[k] = v.view()
                q[k].flags.writeable = False
            out.append(q)
        return out

    def with_layers(self, layers) -> "BinaryNetwork":
        """A network with the same input settings and new layers."""
        return BinaryNetwork(layers, self.input_shape, self.input_layout,
                             self.binarize_input, self.input_scale)

    def layer_input_shape(self, i: int) -> tuple:
        """Input shape of layer i: (features,) or (H, W, C)."""
        return self._geoms[i].shape

    # ------------------------------------------------------------------ constructors and files
    @classmethod
    def from_torch(cls, model, input_shape=None, input_layout=None) -> "BinaryNetwork":
        """Freeze a torch binary model; see :func:`bnn_toroid.network.freeze.from_torch`."""
        from .freeze import from_torch
        return from_torch(model, input_shape=input_shape, input_layout=input_layout)

    def save(self, path):
        """Write ``.npz`` arrays plus JSON metadata atomically; see :mod:`.files`."""
        from .files import save
        return save(self, path)

    def equals(self, other) -> bool:
        """Same architecture and identical parameters (weights, thresholds, pools, output)."""
        if not self.same_architecture(other):
            return False
        for a, b in zip(self.layers, other.layers):
            if isinstance(a, MaxPool2d):
                ma = np.zeros(0, bool) if a.min_channels is None else a.min_channels
                mb = np.zeros(0, bool) if b.min_channels is None else b.min_channels
                if ma.any() or mb.any():
                    if not np.array_equal(ma, mb):
                        return False
                continue
            if not np.array_equal(a.weights, b.weights):
                return False
            for f in ("threshold", "out_scale", "out_bias"):
                va, vb = getattr(a, f), getattr(b, f)
                if (va is None) != (vb is None) or (va is not None and not np.array_equal(va, vb)):
                    return False
        return True


class NetworkStack:
    """S networks of one architecture, evaluated together: one kernel launch per layer
    serves all of them (the inputs of the first binary layer are shared).

    Build it with :meth:`from_networks` or from packed parameters with a leading axis of
    S (e.g. a network's :meth:`BinaryNetwork.packed_params` with bits flipped by XOR).
    The parameters are checked once, here, and must not be changed in place afterwards:
    the stack keeps data derived from them (the first layer's float weights and flips).
    """

    def __init__(self, template: BinaryNetwork, params):
        self.template = template
        sizes = {v.shape[0] for p in params for v in p.values()}
        if len(sizes) != 1:
            raise NetworkError(f"NetworkStack: parameters disagree on the number of networks: {sorted(sizes)}")
        self.size = sizes.pop()
        self.params = _checked_params(template, params)
        real = not template.binarize_input
        self._first = RealFirstLayer(template, self.params[0]) if real else None
        self._tiles = {}  # conv layer -> Harley–Seal filter tiles, repacked once per stack
        self._chain = None  # DenseChain, built at the first evaluation

    @classmethod
    def from_networks(cls, nets) -> "NetworkStack":
        nets = list(nets)
        if not nets:
            raise NetworkError("NetworkStack: no networks given")
        for i, n in enumerate(nets[1:], 1):
            if not nets[0].same_architecture(n):
                raise NetworkError(f"NetworkStack: network {i} has a different architecture from network 0")
        params = [{k: np.concatenate([n._params[i][k] for n in nets]) for k in nets[0]._params[i]}
                  for i in range(len(nets[0].layers))]
        return cls(nets[0], params)

    def __len__(self):
        return self.size

    def network(self, s: int) -> BinaryNetwork:
        """Network ``s`` of the stack as a :class:`BinaryNetwork` (unpacks its weights)."""
        t = self.template
        layers = []
        for i, (layer, p) in enumerate(zip(t.layers, self.params)):
            lay = t.layout(i)
            if isinstance(layer, MaxPool2d):
                layers.append(MaxPool2d(layer.size, layer.stride, lay.unpack(p["mask"][s])))
                continue
            w = lay.unpack(p["w"][s])
            kw = {"threshold": p["T"][s]} if "T" in p else {"out_scale": p["scale"][s], "out_bias": p["bias"][s]}
            if isinstance(layer, Dense):
                layers.append(Dense(w, **kw))
            else:
                layers.append(Conv2d(w, stride=layer.stride, padding=layer.padding,
                                     pad_value=layer.pad_value, **kw))
        return t.with_layers(layers)

    def predict(self, x, batch_size: int = 4096) -> np.ndarray:
        """Logits of every network, float64 (S, N, classes)."""
        step = batch_rows(batch_size, "predict")
        logits = self._dense_chain().fast(x, step)
        if logits is not None:
            return logits[None]
        xin = self.template.prepare_input(x, "predict")
        n = xin.shape[0]
        if 0 < n <= step:  # one batch: the logits are a fresh array already
            return self._forward(xin)[0]
        out = np.empty((self.size, n, self.template.num_classes))
        for lo in range(0, n, step):
            out[:, lo:lo + step] = self._forward(xin[lo:lo + step])[0]
        return out

    def errors(self, x, y, batch_size: int = 4096) -> np.ndarray:
        """Train/test error of every network, float64 (S,); at least one sample."""
        wrong, n = self._wrong(x, y, batch_size, "error")
        return wrong / n

    def _wrong(self, x, y, batch_size, what):
        """(misclassified samples per network, int64 (S,), number of samples)."""
        batch_rows(batch_size, what)
        xin = self.template.prepare_input(x, what)
        n = xin.shape[0]
        y = _labels(y, n, self.template.num_classes, what)
        if n == 0:
            raise ValueError(f"{what}: x holds 0 samples; the {what} of an empty set is undefined, "
                             "expected at least one sample")
        wrong = np.zeros(self.size, np.int64)
        step = batch_rows(batch_size, what)
        for lo in range(0, n, step):
            logits = self._forward(xin[lo:lo + step])[0]
            wrong += (logits.argmax(axis=2) != y[None, lo:lo + step]).sum(axis=1)
        return wrong, n

    def _forward(self, xin, collect: bool = False):
        if not collect:
            logits = self._dense_chain()(xin)
            if logits is not None:
                return logits, [], []
        return _forward(self.template, self.params, xin, collect, self._first, self._conv_tiles)

    def _dense_chain(self) -> DenseChain:
        if self._chain is None:
            self._chain = DenseChain(self.template, self.params, self._first)
        return self._chain

    def _conv_tiles(self, i):
        if i not in self._tiles:
            self._tiles[i] = K.conv_tiles(self.params[i]["w"])
        return self._tiles[i]


def _checked_params(net: BinaryNetwork, params):
    """Each layer's arrays have the template's shapes and dtypes, and packed weights have
    zero padding bits (the kernels rely on both and do not check per call). Thresholds of
    binary layers given as other numbers become int64: ``h >= T`` iff ``h >= ceil(T)``
    for integer ``h``. Returns the parameters (new dicts, arrays shared where unchanged)."""
    params = [dict(p) for p in params]
    if len(params) != len(net.layers):
        raise NetworkError(f"NetworkStack: {len(params)} parameter sets for {len(net.layers)} layers")
    for i, (p, want) in enumerate(zip(params, net.packed_params())):
        if set(p) != set(want):
            raise NetworkError(f"NetworkStack: layer {i} needs parameters {sorted(want)}, got {sorted(p)}")
        for key, v in want.items():
            got = p[key]
            if not isinstance(got, np.ndarray) or got.shape[1:] != v.shape[1:] or (
                    got.dtype != v.dtype and (key != "T" or got.dtype.kind not in "iuf")):
                raise NetworkError(f"NetworkStack: layer {i} '{key}' must be {v.dtype} of shape "
                                   f"(S,) + {v.shape[1:]}, got {getattr(got, 'dtype', type(got))} "
                                   f"{getattr(got, 'shape', '')}")
            # the kernels index raw memory, and read-only arrays would compile new versions
            p[key] = np.ascontiguousarray(got) if got.flags.writeable else np.array(got, order="C")
        if "w" in p:
            if (p["w"] & ~net.layout(i).valid_bits()).any():
                raise NetworkError(f"NetworkStack: layer {i} has packed weights with padding bits "
                                   "set; they must be 0")
        if "T" in p and p["T"].dtype.kind == "f" and np.isnan(p["T"]).any():
            raise NetworkError(f"NetworkStack: layer {i} thresholds contain NaN")
        if "T" in p and not (i == 0 and not net.binarize_input) and p["T"].dtype != np.int64:
            t = p["T"]
            if t.dtype.kind == "f":
                k = net.layers[i].weights[0].size  # |h| <= K: clipping keeps every comparison
                t = np.clip(np.ceil(t), -(k + 1), k + 1)
            p["T"] = np.ascontiguousarray(t, np.int64)
    return params


def _nonfinite(x, what):
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    parts = [f"{c} {w}{'s' if c > 1 and w != 'NaN' else ''}"
             for c, w in ((n_nan, "NaN"), (n_inf, "infinite value")) if c]
    raise ValueError(f"{what}: x holds {' and '.join(parts)}; expected finite input")


def _prepare_input(net: BinaryNetwork, x, what: str = "predict"):
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    kind = x.dtype.kind  # dtype kinds, not issubdtype: this runs on every batch-1 call
    want = net.input_shape
    if kind not in "iuf":
        raise TypeError(f"{what}: x has dtype {x.dtype}; expected real numbers (an integer or "
                        "float array)")
    if x.ndim < 1:
        raise ValueError(f"{what}: x is a scalar; expected a batch of shape (N, *{want})")
    n = x.shape[0]
    if net.input_layout == "flat":
        if math.prod(x.shape[1:]) != math.prod(want):
            raise ValueError(f"{what}: x holds samples of shape {x.shape[1:]}; expected samples of shape {want} "
                             f"({math.prod(want)} features)")
        x = x.reshape(n, math.prod(want))  # explicit: reshape(0, -1) is ambiguous
    else:
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"{what}: x holds samples of shape {x.shape[1:]}; expected samples of shape {want} "
                             f"({net.input_layout})")
        if net.input_layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
    if kind == "f" and x.size:
        lo, hi = x.min(), x.max()  # NaN propagates, ±inf shows: one pass each, no temporary
        if not (np.isfinite(lo) and np.isfinite(hi)):
            _nonfinite(x, what)
        if not net.binarize_input:
            # |h| <= fan-in · max|x| · max(scale) for ±1 weights: refuse what could overflow
            k = net.layers[0].weights[0].size
            top = max(-float(lo), float(hi)) * (1.0 if net.input_scale is None else
                                               float(net.input_scale.max()))
            if top * k > np.finfo(np.float64).max:
                raise ValueError(f"{what}: x reaches |x| = {top:.3g}; sums of {k} such values "
                                 f"overflow float64, expected |x| below "
                                 f"{np.finfo(np.float64).max / k:.3g}")
    if net.binarize_input:
        return K.pack_bits(x)
    if net.input_scale is not None:
        x = x * net.input_scale
    if x.dtype.kind in "iu":
        # integers stay integers: the first layer picks an exact float type for BLAS,
        # and a stack can then share its product (network/first.py)
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x, np.float64)


def _forward(net: BinaryNetwork, params, xin, collect: bool = False, first=None, tiles=None):
    """Run every layer. Returns (logits (S, N, C), pre-activations, hidden activations);
    the last two only when ``collect`` (one network). ``first`` evaluates a first layer
    on real input (:class:`.first.RealFirstLayer`); ``tiles(i)`` gives conv layer i's
    repacked filters. Parameters were checked when the stack was built, so the kernels'
    unchecked entry points are used."""
    pre, acts = [], []
    act = xin[None] if net.binarize_input else None
    n = xin.shape[0]
    for i, (layer, p) in enumerate(zip(net.layers, params)):
        geom = net._geoms[i]
        real = i == 0 and not net.binarize_input
        hidden = isinstance(layer, MaxPool2d) or layer.threshold is not None
        if isinstance(layer, MaxPool2d):
            act = K.binary_maxpool2d_trusted(act, layer.size, layer.stride, p["mask"])
        elif real:
            act, hs = first(xin, hidden, collect)
            if collect:
                pre.append(np.asarray(hs[0], np.float64))
        else:
            # explicit sizes: a -1 is ambiguous for 0 samples
            a = act.reshape(act.shape[0], n, math.prod(act.shape[2:])) if isinstance(layer, Dense) else act
            kk = layer.weights.shape[1] if isinstance(layer, Dense) else geom.shape[2]
            T = p.get("T") if hidden else None
            if isinstance(layer, Dense):
                run = lambda t: K.binary_gemm_trusted(a, p["w"], kk, t)  # noqa: E731
            else:
                kh, kw = layer.weights.shape[1:3]
                pads, _ = K.conv_pads(geom.shape[0], geom.shape[1], kh, kw, layer.stride, layer.padding)
                run = lambda t: K.binary_conv2d_trusted(  # noqa: E731
                    a, tiles(i), kk, (kh, kw), layer.stride, pads, int(layer.pad_value), t)
            if collect or not hidden:
                h = run(None)
                if collect:
                    pre.append(h[0].astype(np.int64))
                act = K.threshold_pack(h.reshape(h.shape[0], -1, h.shape[-1]), T).reshape(
                    h.shape[:-1] + (K.n_words(h.shape[-1]),)) if hidden else h
            else:
                act = run(T)
        if collect and hidden:
            acts.append(act)
    scale, bias = params[-1]["scale"], params[-1]["bias"]
    logits = act.astype(np.float64) * scale[:, None, :] + bias[:, None, :]
    return logits, pre, acts

