"""Train small MNIST minima (MLP 784-512-512-10) with SGD, RSGD, ADV on a 6000-image subset."""
import os
OUT = os.environ.get("BNN_EXP_DIR", "exp_out")  # where minima and results go
os.makedirs(OUT, exist_ok=True)
import sys, time, json, torch
torch.set_num_threads(1)
from bnn_toroid import datasets
from bnn_toroid.nn import MLP
from bnn_toroid.train import fit
from bnn_toroid.symmetry.continuous import train_error
N = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
methods = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sgd", "rsgd", "adv"]
seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1]
tr = datasets.load("mnist", "train", n=N, seed=0)
te = datasets.load("mnist", "test")
for method in methods:
    for seed in seeds:
        torch.manual_seed(seed)
        m = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
        t = time.time()
        kw = dict(adv_epochs=EPOCHS // 2) if method == "adv" else (dict(replicas=3) if method == "rsgd" else {})
        fit(m, tr, method=method, epochs=EPOCHS, lr=0.05, batch_size=128, seed=seed, quiet=True, **kw)
        torch.save(m.state_dict(), f"{OUT}/{method}_{seed}.pt")
        info = dict(method=method, seed=seed, seconds=time.time() - t,
                    train_error=train_error(m, tr), test_error=train_error(m, te))
        print(json.dumps(info), flush=True)
