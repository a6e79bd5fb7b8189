"""The training recipe piece by piece (docs/training.md): latent init scale, parameter
groups, independent RSGD replicas and their coupling, ADV's stop rule, diagnostics."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnn_toroid import diagnostics as G
from bnn_toroid import nn as bnn
from bnn_toroid import train as T


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("layer, fans", [
    (lambda: bnn.BinaryLinear(784, 1001), (784, 1001)),
    (lambda: bnn.BinaryLinear(20, 3), (20, 3)),
    (lambda: bnn.BinaryConv2d(3, 64, 3), (27, 576)),
])
def test_latent_weights_start_at_glorot_scale(layer, fans):
    torch.manual_seed(0)
    w = layer().weight.detach()
    lim = math.sqrt(6.0 / sum(fans))
    assert bnn.glorot_limit(*fans) == pytest.approx(lim)
    assert w.abs().max() <= lim
    if w.numel() > 10_000:   # U(-L, L) has std L / sqrt(3)
        assert float(w.std()) == pytest.approx(lim / math.sqrt(3), rel=0.02)
        assert float(w.abs().max()) > 0.99 * lim


def test_defaults_by_model_kind():
    assert T.defaults(True) == {"optimizer": "sgd", "lr": 10.0, "bn_lr": 0.05}
    assert T.defaults(False)["optimizer"] == "sgd"
    assert T.defaults(True, "adam") == {"optimizer": "adam", "lr": 3e-3, "bn_lr": 1e-3}


def test_batchnorm_has_its_own_learning_rate(digits):
    """BatchNorm's γ, β follow bn_lr, the weights lr: with bn_lr tiny they stay put."""
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 32, 10], input_norm=T.input_norm(digits))
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)][0]
    g0, b0 = bn.weight.detach().clone(), bn.bias.detach().clone()
    w0 = model[2].weight.detach().clone()
    h = T.fit(model, digits, "sgd", epochs=2, bn_lr=1e-12, weight_decay=0.5, quiet=True)
    assert torch.allclose(bn.weight, g0, atol=1e-9) and torch.allclose(bn.bias, b0, atol=1e-9)
    assert (bnn.sign(model[2].weight) != bnn.sign(w0)).float().mean() > 0.05
    assert h.config["optimizer"] == "sgd" and h.config["bn_lr"] == 1e-12
    groups = T._param_groups(model, 0.1, 0.01, 0.5)
    assert [g["name"] for g in groups] == ["weights", "batchnorm"]
    assert groups[1]["lr"] == 0.01 and groups[1]["weight_decay"] == 0.0     # no decay on BN
    assert {id(p) for p in groups[1]["params"]} == {id(bn.weight), id(bn.bias)}


def test_rsgd_replicas_start_independent(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 256, 10], input_norm=T.input_norm(digits))
    gen = torch.Generator().manual_seed(0)
    reps = T._replicas(model, 3, "independent", 0.0, gen, seed=0)
    w = [r[2].weight.detach() for r in reps]
    assert torch.equal(w[0], model[2].weight)                     # replica 0: the model's own start
    for a in (1, 2):                                               # the others: fresh draws
        assert 0.4 < float((bnn.sign(w[a]) != bnn.sign(w[0])).float().mean()) < 0.6
        assert w[a].abs().max() <= bnn.glorot_limit(64, 256)
    assert 0.4 < float((bnn.sign(w[1]) != bnn.sign(w[2])).float().mean()) < 0.6
    pert = T._replicas(model, 2, "perturbed", 0.5, gen, seed=0)
    assert float((bnn.sign(pert[1][2].weight) != bnn.sign(w[0])).float().mean()) < 0.4
    again = T._replicas(model, 3, "independent", 0.0, gen, seed=0)
    assert all(torch.equal(a[2].weight, b[2].weight) for a, b in zip(reps, again))   # seeded


def test_rsgd_gamma0_balances_coupling_and_loss(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 32, 10], input_norm=T.input_norm(digits))
    gen = torch.Generator().manual_seed(0)
    reps = T._replicas(model, 3, "independent", 0.0, gen, seed=0)
    params = [T._train_params(r) for r in reps]
    x = torch.from_numpy(np.array(digits.x)); y = torch.from_numpy(np.array(digits.y))
    g0 = T._balanced_gamma0(reps, params, x, y, 64, torch.device("cpu"), torch.Generator().manual_seed(1))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:640]
    with torch.no_grad():
        loss = np.mean([float(T._loss(r.eval()(x[idx].float()), y[idx])) for r in reps])
        centre = [torch.stack(ps).mean(0) for ps in zip(*params)]
        coupling = np.mean([0.5 * sum(float(((p - c) ** 2).sum()) for p, c in zip(ps, centre)) for ps in params])
    assert g0 * coupling == pytest.approx(loss, rel=1e-5)


def test_rsgd_independent_replicas_collapse_onto_their_centre(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 128, 10], input_norm=T.input_norm(digits))
    h = T.fit(model, digits, "rsgd", epochs=10, batch_size=64, replicas=3, quiet=True)
    assert h.config["replica_init"] == "independent"
    assert h.config["gamma0"] > 0                           # started apart (coupling > 0)
    assert h.replica_hamming[-1] < 0.02                     # ended on the centre
    assert h.diagnostics["replica_hamming"] == h.replica_hamming[-1]
    assert h.train_error[-1] < 0.05
    # the solution is sign(mean latent weights): the model holds the centre itself
    assert h.diagnostics["signs_changed"] > 0.1


def test_adv_stops_at_target_or_cap(digits):
    torch.manual_seed(0)
    model = bnn.MLP([64, 256, 256, 10], input_norm=T.input_norm(digits))
    h = T.fit(model, digits, "adv", epochs=2, adv_epochs=3, adv_target=0.0, lr=0.1, batch_size=64,
              weight_decay=1e-3, quiet=True)
    assert len(h.random_label_error) == 3 and h.phase[:3] == ["adv_init"] * 3   # the cap
    assert h.diagnostics["random_labels_fitted"] is False
    assert h.diagnostics["random_label_error"] == h.random_label_error[-1]
    assert h.diagnostics["signs_changed_since_adv"] is None      # a real-valued model
    assert h.lr[:3] == [0.1] * 3                             # constant rate in the pre-training
    assert "NOT fitted" in h.summary()


def test_adv_small_copy_is_repeated_to_weigh_as_much_as_the_true_labels(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 256, 256, 10], input_norm=T.input_norm(digits))
    h = T.fit(model, digits, "adv", epochs=1, adv_epochs=40, adv_size=100, quiet=True)
    assert h.config["adv_size"] == 100 and h.config["adv_repeats"] == len(digits.y) // 100
    # 100 random labels seen 14 times an epoch: memorised well before the cap
    assert h.diagnostics["random_labels_fitted"] is True
    assert h.diagnostics["adv_epochs_run"] < 40
    full = T.fit(bnn.MLP([64, 8, 10]), digits, "adv", epochs=1, adv_epochs=1, quiet=True)
    assert full.config["adv_repeats"] == 1


def test_diagnostics_signs_changed_and_stuck_units(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 40, 10], input_norm=T.input_norm(digits)).eval()
    before = G.snapshot(model)
    lin = model[2]
    with torch.no_grad():
        lin.weight[:4] *= -1                                  # 4 of 40 rows: 10 % of layer 1
    bn = model[3]
    with torch.no_grad():
        bn.bias[7] = 1e6                                      # unit 7: always +1
        bn.bias[9] = -1e6                                     # unit 9: always -1 (dead)
    d = G.diagnose(model, digits.x, before)
    assert d["layers"][0]["signs_changed"] == pytest.approx(0.1)
    assert d["layers"][1]["signs_changed"] == 0.0
    assert d["signs_changed"] == pytest.approx(4 * 64 / (64 * 40 + 40 * 10))
    assert d["units"] == [{"name": "4", "units": 40, "constant": 2, "dead": 1}]
    real = bnn.MLP([64, 8, 10]).eval()
    with torch.no_grad():
        real[1].weight[3] = 0.0
        real[1].bias[3] = -1.0                                # ReLU unit 3 never fires
    r = G.diagnose(real, digits.x, G.snapshot(real))
    assert r["units"][0]["dead"] == 1 and r["units"][0]["constant"] == 1
    assert r["layers"][0]["relative_change"] == 0.0 and r["signs_changed"] is None


def test_fit_reports_diagnostics(digits):
    torch.manual_seed(0)
    model = bnn.BinaryMLP([64, 64, 10], input_norm=T.input_norm(digits))
    lines = []
    h = T.fit(model, digits, "sgd", epochs=3, quiet=True, log=lines.append)
    assert len(lines) == 3 and lines[0].startswith("epoch 1 [sgd]")
    d = h.diagnostics
    assert [r["kind"] for r in d["layers"]] == ["binary", "binary"]
    assert 0.05 < d["signs_changed"] < 0.6 and d["units"][0]["units"] == 64
    assert h.summary().startswith("signs changed from init")
