import os
OUT = os.environ.get("BNN_EXP_DIR", "exp_out")  # where minima and results go
os.makedirs(OUT, exist_ok=True)
import torch, time, json, sys
torch.set_num_threads(1)
from bnn_toroid import datasets
from bnn_toroid.nn import MLP
from bnn_toroid.train import fit
from bnn_toroid.symmetry.continuous import train_error
tr = datasets.load("mnist", "train", n=4000, seed=0); te = datasets.load("mnist", "test")
adv_epochs = int(sys.argv[1]); seeds = [int(s) for s in sys.argv[2].split(",")]
for seed in seeds:
    torch.manual_seed(seed)
    m = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
    t = time.time()
    h = fit(m, tr, method="adv", epochs=15, adv_epochs=adv_epochs, lr=0.05, batch_size=128, seed=seed, quiet=True)
    torch.save(m.state_dict(), f"{OUT}/adv_{seed}.pt")
    print(json.dumps(dict(method="adv", seed=seed, adv_epochs=adv_epochs, seconds=time.time()-t, rand_err=[round(v,3) for v in h.random_label_error[-3:]],
        train_error=train_error(m, tr), test_error=train_error(m, te))), flush=True)
