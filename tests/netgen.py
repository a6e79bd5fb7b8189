"""Random frozen binary networks for property tests: every parity of threshold, odd and
even fan-ins, dense and conv, real or binarised input."""
import numpy as np

from bnn_toroid.network import BinaryNetwork, Conv2d, Dense, MaxPool2d


def pm1(rng, shape):
    return rng.choice(np.array([-1, 1], np.int8), size=shape)


def thresholds(rng, n, fan_in, real=False, constant=True):
    if real:
        return rng.normal(0, np.sqrt(fan_in) * 30, n)
    if not constant:  # every unit depends on its input: -n < T <= n
        return rng.integers(-fan_in + 1, fan_in + 1, n)
    return rng.integers(-fan_in - 2, fan_in + 3, n)  # every parity, and constant units


def random_mlp(rng, sizes, binarize=True, constant=True):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = pm1(rng, (b, a))
        real = i == 0 and not binarize
        if i == len(sizes) - 2:
            layers.append(Dense(w))
        elif real and not constant:  # a pre-activation of a random image: inputs on both sides
            u = rng.integers(0, 256, size=(b, a))  # one image per unit
            layers.append(Dense(w, threshold=(w.astype(np.int64) * u).sum(axis=1) + 0.5))
        else:
            layers.append(Dense(w, threshold=thresholds(rng, b, a, real=real, constant=constant)))
    return BinaryNetwork(layers, (sizes[0],), binarize_input=binarize)


def random_convnet(rng, hw=9, c_in=3, channels=(5, 4), dense=6, classes=3, binarize=True,
                   padding="same", pad_value=1, pool=True, constant=True):
    layers, h, c = [], hw, c_in
    for i, f in enumerate(channels):
        real = i == 0 and not binarize
        layers.append(Conv2d(pm1(rng, (f, 3, 3, c)), threshold=thresholds(rng, f, 9 * c, real, constant),
                             padding=padding, pad_value=pad_value))
        if padding == "valid":
            h -= 2
        if pool and i == 0:
            layers.append(MaxPool2d(2, min_channels=rng.random(f) < 0.5))
            h //= 2
        c = f
    layers.append(Dense(pm1(rng, (dense, h * h * c)),
                        threshold=thresholds(rng, dense, h * h * c, constant=constant)))
    layers.append(Dense(pm1(rng, (classes, dense))))
    return BinaryNetwork(layers, (hw, hw, c_in), "NHWC", binarize_input=binarize)


def inputs(rng, net, n=40):
    if net.binarize_input:
        return rng.normal(size=(n,) + net.input_shape)
    return rng.integers(0, 256, size=(n,) + net.input_shape).astype(np.uint8)


def shuffle(rng, net):
    """A random permuted and sign-reversed copy of ``net``."""
    from bnn_toroid.symmetry.binary import flippable, hidden_layers, permute_units
    for i in hidden_layers(net):
        n = net.layers[i].units
        flip = (rng.random(n) < 0.5) & flippable(net, i)
        net = permute_units(net, i, rng.permutation(n), flip)
    return net
