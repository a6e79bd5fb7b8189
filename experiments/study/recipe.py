"""Choose the binary training recipe by measurement (docs/training.md, "Choosing the recipe").

Trains BinaryMLP 784-1001-1001-1001-10 on all 60 000 Fashion-MNIST training images for a
few epochs under one recipe and prints one JSON line: signs changed from the
initialisation, constant units, train and test error, seconds per epoch.

    python experiments/study/recipe.py --init glorot --optimizer adam --lr 1e-2 --bn-lr 1e-3
    python experiments/study/recipe.py --init uniform1 --optimizer sgd --lr 10 --bn-lr 10

``--init uniform1`` restores the old U(-1, 1) latent start, to measure what it did.
"""
import argparse
import json
import time

import torch

from bnn_toroid import datasets, nn, train

p = argparse.ArgumentParser()
p.add_argument("--init", choices=["glorot", "uniform1"], default="glorot")
p.add_argument("--optimizer", default="adam")
p.add_argument("--lr", type=float, required=True)
p.add_argument("--bn-lr", type=float, required=True)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--width", type=int, default=1001)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
tr, te = datasets.load("fashion-mnist", "train"), datasets.load("fashion-mnist", "test")
torch.manual_seed(a.seed)
model = nn.BinaryMLP([784, a.width, a.width, a.width, 10], input_norm=train.input_norm(tr))
if a.init == "uniform1":
    for m in model.modules():
        if isinstance(m, nn.BinaryLinear):
            torch.nn.init.uniform_(m.weight, -1.0, 1.0)
t = time.time()
h = train.fit(model, tr, "sgd", epochs=a.epochs, optimizer=a.optimizer, lr=a.lr, bn_lr=a.bn_lr,
              seed=a.seed, quiet=True)
d = h.diagnostics
print(json.dumps({**vars(a), "seconds_per_epoch": (time.time() - t) / a.epochs,
                  "train_error": h.train_error[-1], "test_error": train.evaluate(model, te)[1],
                  "signs_changed": d["signs_changed"],
                  "per_layer": [round(r["signs_changed"], 4) for r in d["layers"]],
                  "constant_units": [u["constant"] for u in d["units"]]}), flush=True)
