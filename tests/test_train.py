"""Tests of bnn_toroid.train (docs/methods.md, "Training") on scikit-learn's digits (fast)."""
import numpy as np
import pytest
import torch
from torch import nn

from bnn_toroid import datasets as D
from bnn_toroid import nn as bnn
from bnn_toroid import train as T


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _head(model, k):
    """The first k modules of a Sequential model as a plain nn.Sequential."""
    return nn.Sequential(*list(model)[:k])


@pytest.fixture(scope="module")
def digits_test():
    return D.load("digits", "test")


def _binary(ds, sizes=(64, 128, 10), seed=0):
    torch.manual_seed(seed)
    return bnn.BinaryMLP(list(sizes), input_norm=T.input_norm(ds))


def _real(ds, sizes=(64, 128, 10), seed=0, batchnorm=False):
    torch.manual_seed(seed)
    return bnn.MLP(list(sizes), input_norm=T.input_norm(ds), batchnorm=batchnorm)


def _latent_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, (bnn.BinaryLinear, bnn.BinaryConv2d))]


# Measured on digits (1437 train / 360 test), 15 epochs, batch 64, seeds 0-2, all four
# methods, default learning rates (docs/training.md): binary train error 0-1.5 % (adv is
# the worst), test 1.9-4.7 %; real train 0-0.5 %, test 1.1-3.1 %. Thresholds leave a
# margin of about 2.5x or more.
BINARY_MAX_TRAIN_ERR = 0.04
REAL_MAX_TRAIN_ERR = 0.02
MAX_TEST_ERR = 0.08


@pytest.mark.parametrize("method", ["sgd", "rsgd", "adv", "sam"])
def test_binary_mlp_trains(method, digits, digits_test):
    model = _binary(digits)
    kw = dict(replicas=3) if method == "rsgd" else {}
    h = T.fit(model, digits, method, epochs=15, batch_size=64, quiet=True, **kw)
    assert h.method == method and h.seconds > 0
    n_ep = 15 + len(h.random_label_error)
    assert len(h.loss) == len(h.train_error) == len(h.lr) == len(h.phase) == n_ep
    assert h.train_error[-1] < BINARY_MAX_TRAIN_ERR, h.train_error
    assert h.train_error[-1] == pytest.approx(T.evaluate(model, digits)[1])
    assert T.evaluate(model, digits_test)[1] < MAX_TEST_ERR
    for w in _latent_weights(model):  # BinaryNet clipping
        assert w.abs().max() <= 1.0
    assert not model.training


@pytest.mark.parametrize("method", ["sgd", "rsgd", "adv", "sam"])
def test_real_mlp_trains(method, digits, digits_test):
    model = _real(digits, batchnorm=(method == "rsgd"))
    kw = dict(replicas=3) if method == "rsgd" else {}
    h = T.fit(model, digits, method, epochs=15, batch_size=64, quiet=True, **kw)
    assert h.train_error[-1] < REAL_MAX_TRAIN_ERR, h.train_error
    assert T.evaluate(model, digits_test)[1] < MAX_TEST_ERR


def test_rsgd_replicas_approach_centre(digits):
    model = _binary(digits)
    h = T.fit(model, digits, "rsgd", epochs=8, batch_size=64, replicas=3, quiet=True)
    d, ham, g = h.replica_distance, h.replica_hamming, h.gamma
    assert len(d) == len(ham) == len(g) == 8
    assert all(b > a for a, b in zip(g, g[1:]))                 # gamma grows
    assert g[-1] / g[0] == pytest.approx(1e4 ** (7 / 8), rel=1e-6)    # 10^4 over the run
    assert d[0] > 1e-3 and d[-1] < 0.1 * d[0]                    # latent distance shrinks
    assert ham[-1] < 0.5 * ham[0]                                # binary weights agree more
    assert h.config["gamma0"] > 0 and h.config["replicas"] == 3


def test_rsgd_centre_has_recomputed_bn_stats(digits):
    model = _real(digits, sizes=(64, 32, 10), batchnorm=True)
    T.fit(model, digits, "rsgd", epochs=2, replicas=2, quiet=True)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)][0]
    # the statistics of the centre's weights, by hand on the whole training set
    with torch.no_grad():
        pre = _head(model, 3)(torch.tensor(digits.x, dtype=torch.float32))  # Normalize, Flatten, Linear
    assert torch.allclose(bn.running_mean, pre.mean(0), atol=1e-4)
    assert torch.allclose(bn.running_var, pre.var(0), rtol=2e-2, atol=1e-4)


def test_recompute_bn_stats_single_batch(digits):
    model = _real(digits, sizes=(64, 16, 10), batchnorm=True)
    model.eval()
    T.recompute_bn_stats(model, digits, batch_size=10_000)
    assert not model.training
    with torch.no_grad():
        pre = _head(model, 3)(torch.tensor(digits.x, dtype=torch.float32))
    bn = model[3]
    assert torch.allclose(bn.running_mean, pre.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, pre.var(0), rtol=1e-4)
    assert bn.momentum == 0.1  # restored


def test_adv_pretraining_fits_random_labels(digits, digits_test):
    model = _real(digits, sizes=(64, 256, 256, 10))
    h = T.fit(model, digits, "adv", epochs=5, adv_epochs=40, lr=0.1, batch_size=64, quiet=True)
    k = len(h.random_label_error)
    assert h.phase == ["adv_init"] * k + ["sgd"] * 5
    # the pre-training stops as soon as the random labels are fitted (chance is 90 %)
    assert k < 40 and h.random_label_error[-1] <= 0.05 < min(h.random_label_error[:-1])
    assert h.diagnostics["random_labels_fitted"] and h.diagnostics["adv_epochs_run"] == k
    assert h.train_error[-1] < REAL_MAX_TRAIN_ERR


def test_adversarial_copy():
    x = np.full((50, 3, 10, 10), 7, np.uint8)
    xa, ya = T.adversarial_copy(x, 10, fraction=0.1, seed=1)
    assert xa.dtype == np.uint8 and xa.shape == x.shape and np.all(x == 7)
    zero = xa == 0
    assert np.all(zero.sum(axis=(2, 3)) == 10)           # 10 % of 100 pixels per image
    assert np.all(zero[:, :1] == zero)                    # same pixels in every channel
    assert ya.dtype == np.int64 and ya.min() >= 0 and ya.max() <= 9
    xb, yb = T.adversarial_copy(x, 10, fraction=0.1, seed=1)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    v = np.ones((20, 40), np.float32)
    va, _ = T.adversarial_copy(v, 2, fraction=0.25, seed=0)
    assert np.all((va == 0).sum(1) == 10)


@pytest.mark.parametrize("method", ["sgd", "rsgd", "adv", "sam"])
def test_same_seed_same_weights(method, digits):
    small = digits.subset(300, seed=0)
    kw = dict(epochs=2, batch_size=50, quiet=True, replicas=2, adv_epochs=1)
    states = []
    for seed in (5, 5, 6):
        model = _binary(small, seed=0)
        T.fit(model, small, method, seed=seed, **kw)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_tuple_data_and_one_output_model():
    # HMM (binary labels) with a single-logit model: BCE loss, predict 1 iff logit >= 0.
    d = D.load("hmm", n=300, D=11, N=101, seed=0)
    te = D.load("hmm", "test", n=300, D=11, N=101, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(101, 1))
    h = T.fit(model, (d.x, d.y), "sgd", epochs=20, lr=0.1, batch_size=32, quiet=True)
    assert h.train_error[-1] < 0.05              # measured 0.3 %
    loss, err = T.evaluate(model, d)
    assert err == pytest.approx(h.train_error[-1])
    assert T.evaluate(model, te)[1] < 0.2        # measured 9 %: same teacher and features
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        T.fit(model, (d.x, d.y + 1), quiet=True)


def test_input_norm_and_is_binary(digits):
    assert T.input_norm(digits) == (digits.mean, digits.std)
    with pytest.raises(ValueError, match="Dataset"):
        T.input_norm((digits.x, digits.y))
    assert T.is_binary(_binary(digits)) and not T.is_binary(_real(digits))


def test_bad_inputs(digits):
    model = _binary(digits)
    x, y = digits.x, digits.y
    with pytest.raises(ValueError, match="known methods: sgd, rsgd, adv, sam"):
        T.fit(model, digits, "adam", quiet=True)
    with pytest.raises(ValueError, match="lr must"):
        T.fit(model, digits, lr=0.0, quiet=True)
    with pytest.raises(ValueError, match="lr must"):
        T.fit(model, digits, lr=-1.0, quiet=True)
    with pytest.raises(ValueError, match="replicas must"):
        T.fit(model, digits, "rsgd", replicas=0, quiet=True)
    with pytest.raises(ValueError, match="epochs must"):
        T.fit(model, digits, epochs=0, quiet=True)
    with pytest.raises(ValueError, match="batch_size must"):
        T.fit(model, digits, batch_size=0, quiet=True)
    with pytest.raises(ValueError, match="empty"):
        T.fit(model, (x[:0], y[:0]), quiet=True)
    with pytest.raises(ValueError, match=r"does not accept inputs of shape \(1, 28, 28\)"):
        T.fit(model, (np.zeros((5, 1, 28, 28), np.uint8), y[:5]), quiet=True)
    xn = x.astype(np.float32)
    xn[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        T.fit(model, (xn, y), quiet=True)
    with pytest.raises(ValueError, match=r"labels range over 0\.\.10 .* 0\.\.9"):
        T.fit(model, (x, np.where(y == 9, 10, y)), quiet=True)
    with pytest.raises(ValueError, match="labels range"):
        T.fit(model, (x, y - 1), quiet=True)
    with pytest.raises(ValueError, match="integers"):
        T.fit(model, (x, y.astype(np.float32)), quiet=True)
    with pytest.raises(ValueError, match="one label per sample"):
        T.fit(model, (x, y[:-1]), quiet=True)
    with pytest.raises(ValueError, match="Dataset or an"):
        T.fit(model, x, quiet=True)
    with pytest.raises(ValueError, match="only 2 output"):
        T.fit(_binary(digits, sizes=(64, 8, 2)), digits, quiet=True)
    with pytest.raises(ValueError, match="momentum"):
        T.fit(model, digits, momentum=1.0, quiet=True)
    with pytest.raises(ValueError, match="sam_rho"):
        T.fit(model, digits, "sam", sam_rho=0.0, quiet=True)
    with pytest.raises(ValueError, match="adv_fraction"):
        T.fit(model, digits, "adv", adv_fraction=1.5, quiet=True)


@pytest.mark.parametrize("method", ["rsgd", "sam"])
def test_binary_convnet_path(method, digits):
    """BinaryConv2d latent weights are clipped and BatchNorm2d is recalibrated too."""
    small = digits.subset(300, seed=1)
    torch.manual_seed(0)
    model = bnn.BinaryConvNet(input_shape=(1, 8, 8), channels=(8,), dense=(32,),
                              kernel_size=3, input_norm=T.input_norm(small))
    h = T.fit(model, small, method, epochs=3, batch_size=50, replicas=2, quiet=True)
    assert h.train_error[-1] < 0.5            # well below chance (90 %) after 3 epochs
    for w in _latent_weights(model):
        assert w.abs().max() <= 1.0
    if method == "rsgd":
        assert h.replica_hamming[-1] < h.replica_hamming[0]


def test_progress_bar_only_on_a_terminal_and_not_quiet(digits, capsys, monkeypatch):
    import sys
    T.fit(_real(digits), digits.subset(100), epochs=2, quiet=False)
    assert "fit[sgd]" not in capsys.readouterr().err      # captured stderr: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    T.fit(_real(digits), digits.subset(100), epochs=2, quiet=False)
    assert "fit[sgd]" in capsys.readouterr().err
    T.fit(_real(digits), digits.subset(100), epochs=2, quiet=True)
    assert "fit[sgd]" not in capsys.readouterr().err
