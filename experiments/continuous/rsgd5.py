import os
OUT = os.environ.get("BNN_EXP_DIR", "exp_out")  # where minima and results go
os.makedirs(OUT, exist_ok=True)
import torch, time, json, numpy as np
torch.set_num_threads(1)
from bnn_toroid import datasets
from bnn_toroid.nn import MLP
from bnn_toroid.train import fit
from bnn_toroid.symmetry.continuous import train_error
from bnn_toroid.landscape.continuous import local_energy
from bnn_toroid.geometry.continuous import distance
tr = datasets.load("mnist", "train", n=4000, seed=0); te = datasets.load("mnist", "test")
torch.manual_seed(5); r0 = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
torch.manual_seed(6); r1 = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
print("init baseline", {k: round(distance(r0, r1, kind=k), 4) for k in ("normalized", "normalized_aligned", "geodesic", "geodesic_aligned")}, flush=True)
torch.manual_seed(2)
m = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
t = time.time()
h = fit(m, tr, method="rsgd", epochs=15, lr=0.05, batch_size=128, seed=2, quiet=True, replicas=5)
le = local_energy(m, (tr.x[:2000], tr.y[:2000]), sigma=[0.3, 0.4, 0.5], samples=20, batch_size=1000, chunk=4)
print(json.dumps(dict(seconds=time.time()-t, train=train_error(m, tr), test=train_error(m, te), dE=np.round(le.mean, 4).tolist(), sem=np.round(le.sem, 4).tolist())))
