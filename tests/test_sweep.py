"""``bnn_toroid.sweep``: the same tiny sweep on the local process pool, on Ray and inline
gives identical numbers; the report's fields; a bad config fails with one clear line."""
import json
import os
import sys

import numpy as np
import pytest

from bnn_toroid import cli
from bnn_toroid.sweep import SweepError, load_config, results_of, run_sweep, task_seed

BINARY = {
    "data": {"name": "digits", "n": 200, "test": True},
    "model": "bmlp:64-16-10",
    "methods": ["sgd", "rsgd"],
    "seeds": [0, 1],
    "epochs": 2,
    "analyses": {"local_energy": {"eps": [0.0, 0.01, 0.05], "samples": 3},
                 "paths": ["random", "search"], "points": 11, "search": {"candidates": 8}},
}
REAL = {
    "data": {"name": "digits", "n": 200},
    "model": "mlp:64-16-10",
    "methods": ["sgd", "sam"],
    "seeds": [0, 1],
    "epochs": 10,
    "lr": 0.1,
    "analyses": {"local_energy": {"sigma": [0.0, 0.2], "samples": 2},
                 "paths": ["linear", "geodesic"], "points": 5},
}


def _write(path, cfg):
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance for this module (two CPUs, no dashboard), shut down after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'bnn_toroid[ray]'")
    address = os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture(scope="module")
def binary_runs(tmp_path_factory, ray_instance):
    """The binary config through the CLI on the local pool, on Ray and inline."""
    d = tmp_path_factory.mktemp("sweep")
    cfg = _write(d / "sweep.json", BINARY)
    assert cli.main(["sweep", cfg, "--out", str(d / "local"), "--workers", "2",
                     "--json", str(d / "local.json"), "-q"]) == 0
    local = json.loads((d / "local.json").read_text())
    ray_rep = run_sweep(cfg, executor="ray", workers=2, out=d / "ray", quiet=True)
    inline = run_sweep(cfg, executor="inline", out=d / "inline", quiet=True)
    return d, local, ray_rep, inline


def test_local_ray_and_inline_sweeps_are_identical(binary_runs):
    d, local, ray_rep, inline = binary_runs
    assert local["executor"] == "local" and ray_rep["executor"] == "ray"
    assert results_of(local) == results_of(ray_rep)
    assert results_of(local) == results_of(inline)
    # the minima themselves are equal files (bit-identical weights)
    for name in local["names"]:
        a = np.load(d / "local" / "minima" / f"{name}.npz")
        b = np.load(d / "ray" / "minima" / f"{name}.npz")
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k]), (name, k)


def test_binary_report_fields(binary_runs):
    d, local, _, _ = binary_runs
    on_disk = json.loads((d / "local" / "sweep.json").read_text())
    assert on_disk == local
    names = ["sgd-0", "sgd-1", "rsgd-0", "rsgd-1"]
    assert local["names"] == names and local["kind"] == "binary" and local["seed"] == 0
    assert [p["name"] for p in local["config"]["analyses"]["paths"]] == ["random", "search"]
    for n in names:
        m = local["minima"][n]
        assert m["method"] == n.split("-")[0] and m["seed"] == int(n.split("-")[1])
        assert (d / "local" / m["file"]).exists()
        assert 0 <= m["train_error"] < 0.9 and 0 <= m["test_error"] < 0.9
        assert len(m["history"]["loss"]) == 2
        assert len(m["fingerprint"]) == 64 and int(m["fingerprint"], 16) >= 0
        assert m["n_weights"] == 64 * 16 + 16 * 10
        le = m["local_energy"]
        assert le["x"] == [0.0, 0.01, 0.05] and len(le["mean"]) == 3 and le["samples"] == 3
        assert le["base_error"] == pytest.approx(m["train_error"])
        assert abs(le["mean"][0]) < 1e-12 and le["mean"][2] > 0
    assert len({local["minima"][n]["fingerprint"] for n in names}) == 4
    assert len(local["pairs"]) == 6
    raw, al = np.array(local["distance"]["raw"]), np.array(local["distance"]["aligned"])
    assert np.allclose(raw, raw.T) and np.allclose(al, al.T)
    assert np.all(np.diag(raw) == 0) and np.all((raw >= 0) & (raw <= 1))
    for p in local["pairs"]:
        i, j = names.index(p["a"]), names.index(p["b"])
        assert i < j and raw[i, j] == p["distance_raw"] and al[i, j] == p["distance_aligned"]
        assert set(p["barriers"]) == {"random", "search"}
        for kind, bar in p["barriers"].items():
            e = bar["errors"]
            assert len(e) == len(bar["fractions"])
            assert bar["barrier"] == max(e)
            assert e[0] == local["minima"][p["a"]]["train_error"]
    t = local["timings"]
    assert t["this_run_seconds"] > 0 and len(t["tasks"]) == 4 + 4 + 6 + 6 * 2
    assert set(t["train_seconds"]) == set(names)


def test_sweep_numbers_are_reproduced_by_analyze_and_connect(binary_runs, tmp_path):
    """The per-minimum and pairwise numbers equal those of the single commands."""
    d, local, _, _ = binary_runs
    f = {n: str(d / "local" / local["minima"][n]["file"]) for n in local["names"]}
    out = tmp_path / "an.json"
    assert cli.main(["analyze", f["sgd-0"], f["rsgd-1"], "--data", "digits", "--n", "200",
                     "--eps", "0", "0.01", "0.05", "--samples", "3", "--json", str(out), "-q"]) == 0
    an = json.loads(out.read_text())
    for n in ("sgd-0", "rsgd-1"):
        assert an["networks"][n]["local_energy"]["mean"] == local["minima"][n]["local_energy"]["mean"]
        assert an["networks"][n]["fingerprint"] == local["minima"][n]["fingerprint"]
    pair = next(p for p in local["pairs"] if (p["a"], p["b"]) == ("sgd-0", "rsgd-1"))
    assert an["distance"]["aligned"][0][1] == pair["distance_aligned"]
    out = tmp_path / "cn.json"
    assert cli.main(["connect", f["sgd-0"], f["rsgd-1"], "--data", "digits", "--n", "200",
                     "--path", "random", "--points", "11", "--json", str(out), "-q"]) == 0
    assert json.loads(out.read_text())["errors"] == pair["barriers"]["random"]["errors"]


def test_real_valued_sweep_inline(tmp_path):
    rep = run_sweep(REAL, executor="inline", out=tmp_path / "out", quiet=True)
    assert rep["kind"] == "real" and rep["names"] == ["sgd-0", "sgd-1", "sam-0", "sam-1"]
    for m in rep["minima"].values():
        assert 0 <= m["train_error"] < 0.5
        assert "fingerprint" not in m and "test_error" not in m
        assert m["local_energy"]["x"] == [0.0, 0.2]
    assert len(rep["pairs"]) == 6
    for p in rep["pairs"]:
        assert set(p["barriers"]) == {"linear", "geodesic"}
        assert p["distance_raw"] > 0 and p["distance_aligned"] > 0
        for bar in p["barriers"].values():
            assert len(bar["errors"]) == 5 and bar["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
            assert bar["barrier"] == max(bar["errors"])
    assert json.loads((tmp_path / "out" / "sweep.json").read_text()) == rep


def test_task_seed_is_stable():
    assert task_seed("pair", "sgd-0", "rsgd-1", 0) == task_seed("pair", "sgd-0", "rsgd-1", 0)
    assert task_seed("pair", "sgd-0", "rsgd-1", 0) != task_seed("pair", "sgd-0", "rsgd-1", 1)
    assert task_seed("train", "sgd", 0) == 1622897527   # a fixed hash: same in every process
    assert 0 <= task_seed("x") < 2 ** 31


def test_load_config_fills_defaults():
    cfg = load_config({"data": "digits", "model": "bmlp:64-16-10", "methods": "sgd", "seeds": 3,
                       "epochs": 1})
    assert cfg["data"] == {"name": "digits", "n": None, "test": False, "path": None}
    assert cfg["methods"] == ["sgd"] and cfg["seeds"] == [3] and cfg["kind"] == "binary"
    assert [p["kind"] for p in cfg["analyses"]["paths"]] == ["random"] and cfg["analyses"]["points"] == 21
    assert cfg["analyses"]["local_energy"]["samples"] == 10
    real = load_config({"data": "digits", "model": "mlp:64-16-10", "methods": ["sgd"], "seeds": [0],
                        "epochs": 1})
    assert [p["name"] for p in real["analyses"]["paths"]] == ["linear", "geodesic"]
    assert "sigma" in real["analyses"]["local_energy"]


def _cfg(**over):
    cfg = {"data": {"name": "digits", "n": 50}, "model": "bmlp:64-8-10", "methods": ["sgd"],
           "seeds": [0], "epochs": 1}
    for k, v in over.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    return cfg


@pytest.mark.parametrize("over, match", [
    ({"methods": None}, r"missing key\(s\) \['methods'\]"),
    ({"model": None, "epochs": None}, r"missing key\(s\) \['model', 'epochs'\]"),
    ({"methods": ["sgd", "bogus"]}, "unknown method 'bogus'"),
    ({"data": {"name": "nope"}}, "unknown data set 'nope'"),
    ({"data": {"name": "digits", "n": 5000}}, "n must be between"),
    ({"data": {"name": "digits", "size": 3}}, r"data: unknown key\(s\) \['size'\]"),
    ({"model": "zzz:1"}, "unknown kind 'zzz'"),
    ({"model": "bmlp:64-x-10"}, "layer widths must be integers"),
    ({"model": "bmlp:100-10"}, "does not accept digits inputs"),
    ({"model": "bmlp:64-8-3"}, "3 outputs but digits has 10 classes"),
    ({"seeds": [0, 0]}, "duplicates"),
    ({"seeds": [-1]}, "non-negative integers"),
    ({"epochs": 0}, "'epochs' must be a positive integer"),
    ({"lr": -1}, "'lr' must be a finite number > 0"),
    ({"epoch": 3}, r"unknown key\(s\) \['epoch'\]"),
    ({"analyses": {"paths": ["linear"]}}, "'linear' is not available for binary"),
    ({"model": "mlp:64-8-10", "analyses": {"paths": ["search"]}}, "'search' is not available for real-valued"),
    ({"analyses": {"local_energy": {"sigma": [0.1]}}}, "take 'eps'"),
    ({"analyses": {"local_energy": {"eps": [2.0]}}}, r"must lie in \[0.0, 1.0\]"),
    ({"analyses": {"search": {"beam": 3}, "paths": ["search"]}}, r"unknown option\(s\) \['beam'\]"),
    ({"analyses": {"search": {"candidates": 3}}}, "no 'search' path is in analyses.paths"),
    ({"analyses": {"paths": ["random", {"kind": "random", "orders": 2}]}}, "duplicate names"),
    ({"analyses": {"paths": [{"kind": "random", "bogus": 1}]}}, r"paths\[0\]: unknown option\(s\) \['bogus'\]"),
    ({"analyses": {"paths": [{"kind": "random", "search_n": 10}]}}, "for 'search' paths only"),
    ({"analyses": {"paths": [{"kind": "random", "name": "../x"}]}}, "without '/'"),
    ({"method_options": {"sgd": {"momentun": 0.5}}}, r"method_options.sgd: unknown option\(s\) \['momentun'\]"),
    ({"method_options": {"adv": {"adv_epochs": 1}}}, "'adv' is not one of the sweep's methods"),
])
def test_bad_config(tmp_path, over, match):
    with pytest.raises(SweepError, match=match):
        run_sweep(_cfg(**over), out=tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_bad_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_sweep(tmp_path / "missing.json", quiet=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": "digits", ')
    with pytest.raises(SweepError, match="not valid JSON"):
        run_sweep(bad, quiet=True)
    bad.write_text("[1, 2]")
    with pytest.raises(SweepError, match="JSON object at the top level"):
        run_sweep(bad, quiet=True)


def test_bad_executor_and_workers(tmp_path):
    with pytest.raises(SweepError, match="unknown executor 'dask'; choose from local, ray"):
        run_sweep(_cfg(), executor="dask", quiet=True)
    with pytest.raises(SweepError, match="workers must be a positive integer"):
        run_sweep(_cfg(), workers=0, quiet=True)


def test_ray_not_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)       # import ray -> ImportError
    with pytest.raises(SweepError, match=r"pip install 'bnn_toroid\[ray\]'"):
        run_sweep(_cfg(), executor="ray", out=tmp_path, quiet=True)


def test_failing_task_is_one_clear_error(tmp_path, capsys, monkeypatch):
    from bnn_toroid import train as T

    def broken(*a, **k):
        raise ValueError("fit: a failure only training finds")
    monkeypatch.setattr(T, "fit", broken)          # inline: the task runs in this process
    cfg = _write(tmp_path / "c.json", _cfg())
    with pytest.raises(SweepError, match=r"task train sgd-0 failed: ValueError: fit: a failure only"):
        run_sweep(cfg, executor="inline", out=tmp_path / "out", quiet=True)
    assert "Traceback" in (tmp_path / "out" / "sweep_error.txt").read_text()
    assert cli.main(["sweep", cfg, "--executor", "inline", "--out", str(tmp_path / "o2"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnn-toroid: error: sweep: task train sgd-0 failed")
