"""Continuous landscape analysis of the small MNIST minima (see docs/continuous_landscape.md)."""
import os
OUT = os.environ.get("BNN_EXP_DIR", "exp_out")  # where minima and results go
os.makedirs(OUT, exist_ok=True)
import json, sys, time, itertools
import numpy as np, torch
torch.set_num_threads(1)
from bnn_toroid import datasets
from bnn_toroid.nn import MLP
from bnn_toroid.symmetry.continuous import train_error
from bnn_toroid.geometry.continuous import distance
from bnn_toroid.landscape.continuous import local_energy
from bnn_toroid.paths.continuous import linear, geodesic, single_bend

N = 4000
tr = datasets.load("mnist", "train", n=N, seed=0)
te = datasets.load("mnist", "test")
le_data = (tr.x[:2000], tr.y[:2000])
def load(name):
    m = MLP([784, 512, 512, 10], input_norm=(tr.mean, tr.std))
    m.load_state_dict(torch.load(f"{OUT}/{name}.pt", weights_only=True))
    return m.eval()
names = [f"{m}_{s}" for m in ("sgd", "rsgd", "adv") for s in (0, 1)]
models = {n: load(n) for n in names}
out = {"models": {}, "pairs": {}}
t0 = time.time()
sigma = np.round(np.linspace(0, 0.5, 11), 3)
for n, m in models.items():
    r = dict(train_error=train_error(m, tr), test_error=train_error(m, te))
    if n.endswith("_0") or "le_all" in sys.argv:
        le = local_energy(m, le_data, sigma=sigma, samples=20, seed=0, batch_size=1000, chunk=4)
        r.update(sigma=le.sigma.tolist(), dE=le.mean.tolist(), dE_sem=le.sem.tolist(),
                 le_base=le.base_error)
    out["models"][n] = r
    print(n, json.dumps({k: (np.round(v, 4).tolist() if isinstance(v, list) else round(v, 4)) for k, v in r.items()}), f"{time.time()-t0:.0f}s", flush=True)
pairs = [("sgd_0", "sgd_1"), ("rsgd_0", "rsgd_1"), ("adv_0", "adv_1"),
         ("sgd_0", "rsgd_1"), ("sgd_0", "adv_1"), ("rsgd_0", "adv_1")]
for a_n, b_n in pairs:
    a, b = models[a_n], models[b_n]
    r = {}
    for kind in ("raw", "aligned", "normalized", "normalized_aligned", "geodesic", "geodesic_aligned"):
        r["d_" + kind] = distance(a, b, kind=kind)
    r["d_normalized_aligned_weights"] = distance(a, b, kind="normalized_aligned", method="weights")
    paths = {
        "linear": linear(a, b),
        "linear_aligned": linear(a, b, align=True),
        "geodesic_aligned": geodesic(a, b),
        "geodesic_aligned_weights": geodesic(a, b, method="weights"),
        "geodesic_aligned_activations": geodesic(a, b, method="activations", data=tr),
    }
    for k, p in paths.items():
        e = p.errors(tr)
        r[k] = dict(max=float(e.max()), height=float(e.max() - 0.5 * (e[0] + e[-1])), curve=e.tolist())
    sb = single_bend(a, b, tr, points=21, epochs=10, lr=0.05, seed=0)
    e = sb.errors(tr)
    r["single_bend"] = dict(max=float(e.max()), height=float(e.max() - 0.5 * (e[0] + e[-1])),
                            curve=e.tolist(), midpoint_log=sb.train_log.tolist())
    out["pairs"][f"{a_n}|{b_n}"] = r
    print(a_n, b_n, {k: (round(v, 4) if isinstance(v, float) else round(v["max"], 4)) for k, v in r.items()}, f"{time.time()-t0:.0f}s", flush=True)
    json.dump(out, open(f"{OUT}/results.json", "w"), indent=1)
json.dump(out, open(f"{OUT}/results.json", "w"), indent=1)
print("total", time.time() - t0)
