"""How fast does ADV's pre-training fit the random labels? (docs/training.md, "ADV")

Pre-trains a model on Fashion-MNIST plus its random-label copy and logs, per epoch, the
random-label train error; stops at ``--target`` or ``--cap`` epochs.

    python experiments/study/adv_probe.py --model bmlp:784-501-501-501-10 --adv-lr 10 --adv-size 6000
    python experiments/study/adv_probe.py --model mlp:784-512-512-10 --data mnist --adv-lr 0.05
"""
import argparse
import time

import torch

from bnn_toroid import datasets, train
from bnn_toroid.io import build_model

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--data", default="fashion-mnist")
p.add_argument("--adv-lr", type=float, default=None)
p.add_argument("--optimizer", default=None)
p.add_argument("--batch-size", type=int, default=None)
p.add_argument("--cap", type=int, default=20)
p.add_argument("--adv-size", type=int, default=None, help="random-label images (default: all)")
p.add_argument("--target", type=float, default=0.05)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(1)
tr = datasets.load(a.data, "train")
torch.manual_seed(a.seed)
model = build_model(a.model, input_norm=train.input_norm(tr))
t = time.time()
h = train.fit(model, tr, "adv", epochs=1, adv_epochs=a.cap, adv_lr=a.adv_lr, adv_target=a.target,
              adv_size=a.adv_size, **({"optimizer": a.optimizer} if a.optimizer else {}),
              **({"batch_size": a.batch_size} if a.batch_size else {}),
              seed=a.seed, quiet=True, log=lambda s: print(f"{time.time() - t:7.0f}s {s}", flush=True))
print("summary:", h.summary(), flush=True)
