"""The ``bnn-toroid`` command: every subcommand on tiny data writes valid JSON with the
documented fields (docs/cli.md); bad command lines exit non-zero with ONE line on stderr.

Subcommands run in-process through ``bnn_toroid.cli.main``; a few go through the installed
``bnn-toroid`` entry point in a subprocess. ``demo --quick`` and the real ``bench --quick``
take a minute or more each on two shared cores and are marked ``slow``
(``pytest -m 'not slow'`` skips them).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnn_toroid as bt
from bnn_toroid import bench, cli

DATA = ["--data", "digits", "--n", "200"]
BIN, REAL = "bmlp:64-16-10", "mlp:64-16-10"
PNG = b"\x89PNG\r\n\x1a\n"


def _run(argv, capsys):
    """cli.main(argv) -> (exit code, stdout, stderr); argparse's SystemExit counts as a code."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _json(path):
    return json.loads(Path(path).read_text())


def _one_line_error(rc, err, *needles):
    assert rc not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Two tiny binary and two tiny real-valued minima, trained through ``train``."""
    d = tmp_path_factory.mktemp("cli")
    for name, spec, method, seed, extra in [
            ("a", BIN, "sgd", 0, ["--test"]), ("b", BIN, "rsgd", 1, []),
            ("ra", REAL, "sgd", 0, ["--lr", "0.1"]), ("rb", REAL, "sam", 1, ["--lr", "0.1"])]:
        rc = cli.main(["train", "--model", spec, *DATA, "--epochs", "6", "--method", method,
                       "--seed", str(seed), "-o", str(d / f"{name}.npz"), "--json", str(d / f"{name}.json"),
                       "-q", *extra])
        assert rc == 0
    return d


# ---------------------------------------------------------------------------- train
def test_train_binary_report(nets):
    r = _json(nets / "a.json")
    assert r["command"] == "train" and r["kind"] == "binary" and r["model"] == BIN
    assert r["method"] == "sgd" and r["seed"] == 0 and r["epochs"] == 6 and r["data"] == "digits"
    assert r["output"] == str(nets / "a.npz") and (nets / "a.npz").exists()
    assert 0 <= r["train_error"] < 0.6 and 0 <= r["test_error"] < 0.7
    assert len(r["history"]["loss"]) == len(r["history"]["train_error"]) == 6
    assert r["seconds"] > 0
    net = bt.load(nets / "a.npz")
    data = bt.datasets.load("digits", n=200, seed=0)
    assert net.error(data.x, data.y) == r["train_error"]
    assert _json(nets / "b.json")["method"] == "rsgd" and _json(nets / "b.json")["test_error"] is None


def test_train_real_report(nets):
    r = _json(nets / "ra.json")
    assert r["kind"] == "real" and r["model"] == REAL and 0 <= r["train_error"] < 0.6
    assert _json(nets / "rb.json")["method"] == "sam"


def test_train_json_on_stdout(tmp_path, capsys):
    """``--json`` without FILE: stdout is the report alone (messages go to stderr)."""
    rc, out, err = _run(["train", "--model", "bmlp:64-8-10", "--data", "digits", "--n", "100",
                         "--epochs", "1", "-o", str(tmp_path / "n.npz"), "--json"], capsys)
    assert rc == 0
    r = json.loads(out)
    assert r["command"] == "train" and r["output"] == str(tmp_path / "n.npz")
    assert "train error" in err


# ---------------------------------------------------------------------------- analyze
def test_analyze_binary(nets, tmp_path):
    out, fig = tmp_path / "an.json", tmp_path / "an.png"
    assert cli.main(["analyze", str(nets / "a.npz"), str(nets / "b.npz"), *DATA, "--eps", "0", "0.01",
                     "0.1", "--samples", "3", "--test", "--figure", str(fig), "--json", str(out), "-q"]) == 0
    r = _json(out)
    assert r["command"] == "analyze" and r["n"] == 200 and r["names"] == ["a", "b"]
    assert r["figure"] == str(fig) and fig.read_bytes().startswith(PNG)
    assert r["networks"]["a"]["train_error"] == _json(nets / "a.json")["train_error"]
    for e in r["networks"].values():
        assert 0 <= e["train_error"] <= 1 and 0 <= e["test_error"] <= 1
        assert len(e["fingerprint"]) == 64 and e["n_weights"] == 64 * 16 + 16 * 10
        le = e["local_energy"]
        assert le["x"] == [0.0, 0.01, 0.1] and len(le["mean"]) == len(le["std"]) == 3
        assert le["base_error"] == e["train_error"] and le["mean"][2] > 0
    assert r["distance"]["kind"] == "hamming"
    raw, al = np.array(r["distance"]["raw"]), np.array(r["distance"]["aligned"])
    assert raw.shape == al.shape == (2, 2) and np.all(np.diag(raw) == 0)
    assert raw[0, 1] == raw[1, 0] > 0 and 0 < al[0, 1] <= raw[0, 1]


def test_analyze_real(nets, tmp_path):
    out = tmp_path / "an.json"
    assert cli.main(["analyze", str(nets / "ra.npz"), str(nets / "rb.npz"), *DATA, "--sigma", "0", "0.3",
                     "--samples", "2", "--json", str(out), "-q"]) == 0
    r = _json(out)
    assert set(r["networks"]) == {"ra", "rb"}
    for e in r["networks"].values():
        assert "fingerprint" not in e and e["local_energy"]["x"] == [0.0, 0.3]
    assert r["distance"]["raw"][0][1] > 0 and r["distance"]["aligned"][0][1] > 0


# ---------------------------------------------------------------------------- connect
@pytest.mark.parametrize("a, b, path", [("a", "b", "random"), ("a", "b", "search"),
                                        ("ra", "rb", "linear"), ("ra", "rb", "geodesic")])
def test_connect(nets, tmp_path, a, b, path):
    out = tmp_path / "c.json"
    assert cli.main(["connect", str(nets / f"{a}.npz"), str(nets / f"{b}.npz"), *DATA, "--path", path,
                     "--points", "7", "--json", str(out), "-q"]) == 0
    r = _json(out)
    assert r["command"] == "connect" and r["path"] == path and r["aligned"] is True
    assert r["a"] == str(nets / f"{a}.npz") and r["seconds"] > 0
    e = r["errors"]
    assert len(e) == len(r["fractions"]) >= 2 and all(0 <= v <= 1 for v in e)
    assert r["barrier"] == max(e) and r["height"] == pytest.approx(max(e) - (e[0] + e[-1]) / 2)
    if path in ("random", "linear"):     # the first endpoint is the network itself
        assert e[0] == pytest.approx(_json(nets / f"{a}.json")["train_error"], abs=1e-12)
    if path != "search":
        assert len(e) == 7 and r["fractions"][0] == 0 and r["fractions"][-1] == 1


# ---------------------------------------------------------------------------- export / import
def test_export_import_roundtrip(nets, tmp_path):
    onnx_file, back = tmp_path / "a.onnx", tmp_path / "a_back.npz"
    assert cli.main(["export", str(nets / "a.npz"), "-o", str(onnx_file), "--json", str(tmp_path / "e.json"),
                     "-q"]) == 0
    e = _json(tmp_path / "e.json")
    assert e == {"command": "export", "network": str(nets / "a.npz"), "output": str(onnx_file),
                 "opset": 17, "qonnx": False}
    assert onnx_file.stat().st_size > 0
    assert cli.main(["import", str(onnx_file), "-o", str(back), "--json", str(tmp_path / "i.json"), "-q"]) == 0
    i = _json(tmp_path / "i.json")
    assert i["command"] == "import" and i["model"] == str(onnx_file) and i["output"] == str(back)
    net, net2 = bt.load(nets / "a.npz"), bt.load(back)
    assert i["n_weights"] == net.n_weights and len(i["layers"]) >= 2
    x = bt.datasets.load("digits", "test").x
    assert np.array_equal(net.predict(x), net2.predict(x))


# ---------------------------------------------------------------------------- bench
def _small_bench(monkeypatch):
    gemm, mlp = bench.gemm_case, bench.mlp_case
    monkeypatch.setattr(bench, "gemm_case", lambda n=256, threads=2, repeats=15, form=None, **k:
                        gemm(n=min(n, 8), k=256, m=128, threads=threads, repeats=2, form=form))
    monkeypatch.setattr(bench, "mlp_case", lambda batch=256, threads=2, repeats=15, **k:
                        mlp(sizes=(64, 32, 10), batch=min(batch, 8), threads=threads, repeats=2))
    monkeypatch.setattr(bench, "startup_times", lambda: {"import_s": 1.0, "first_call_compile_s": 2.0,
                                                         "cached_first_call_s": 0.5})


def test_bench_small(monkeypatch, tmp_path):
    """``bench --quick`` with bench.run's cases shrunk (the real one is test_bench_quick)."""
    _small_bench(monkeypatch)
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--threads", "1", "--json", str(out), "-q"]) == 0
    _check_bench(_json(out), threads=1)


def test_bench_all_forms_times_every_form_the_host_runs(monkeypatch, tmp_path):
    from bnn_toroid.kernels import forms
    _small_bench(monkeypatch)
    monkeypatch.setattr(bench, "dense_case", lambda n=64, threads=2, repeats=15, form="tiles", **k:
                        bench.Row("binary dense", "", threads, 1.0, 1.0, 1.0, 1.0, form=form))
    monkeypatch.setattr(bench, "pixel_case", lambda n=64, threads=2, repeats=15, form="bytes", **k:
                        bench.Row("pixel_dense", f"n={n}", threads, 1.0, 1.0, 1.0, 1.0, form=form))
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--forms", "all", "--threads", "1", "--json", str(out), "-q"]) == 0
    r = _json(out)
    assert r["all_forms"] is True
    by = {}
    for row in r["rows"]:
        by.setdefault((row["name"], row["shape"]), []).append(row["form"])
    gemm_rows = [v for (name, _), v in by.items() if name == "binary_gemm"]
    assert gemm_rows and all(sorted(v) == forms.runnable("gemm") for v in gemm_rows)
    assert sorted(by[("binary dense", "")]) == forms.runnable("hidden")
    assert sorted(by[("pixel_dense", "n=64")]) == forms.runnable("first")
    assert sorted(by[("pixel_dense", "n=1")]) == forms.runnable("first_one")
    conv_rows = [v for (name, _), v in by.items() if name == "binary_conv2d"]
    assert conv_rows and all(sorted(v) == forms.runnable("conv") for v in conv_rows)


def _check_bench(r, threads):
    assert r["threads"] == threads and isinstance(r["cpu"], str)
    names = [row["name"] for row in r["rows"]]
    # the required rows: GEMM at batch 256 and 1, predict at batch 1 and 256; and
    # the pixel first layer at batch 1 (sign bits) and 64 (bytes and lookups)
    assert names.count("binary_gemm") == 2 and names.count("BinaryNetwork.predict") == 2, names
    # one row per workload, in the form this host runs, named in the row and the header
    assert names.count("pixel_dense") == 2 and names.count("binary dense") == 1, names
    from bnn_toroid.kernels import forms
    assert r["forms"] == forms.report()["forms"] and r["cpu_class"] == forms.report()["cpu_class"]
    want = [r["forms"]["gemm"]] * 2 + [r["forms"]["first_one"], r["forms"]["first"], r["forms"]["hidden"]]
    assert [row["form"] for row in r["rows"][:5]] == want
    assert isinstance(r["cpu_model"], str) and set(r["features"]) <= forms.host_features()
    for row in r["rows"]:
        assert row["ours_ms"] > 0 and row["ref_ms"] > 0 and row["ratio"] > 0 and row["gmacs"] > 0
        assert row["threads"] == threads
    assert set(r["startup"]) == {"import_s", "first_call_compile_s", "cached_first_call_s"}


@pytest.mark.slow
def test_bench_quick(tmp_path):
    """The real ``bench --quick`` (about 80 s on two shared cores: it compiles the kernels
    into an empty Numba cache in a subprocess)."""
    out = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--json", str(out), "-q"]) == 0
    _check_bench(_json(out), threads=2)


# ---------------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--json", str(tmp_path / "d.json"), "-q"]) == 0
    assert (out / "demo.png").read_bytes().startswith(PNG)
    r = _json(out / "report.json")
    assert _json(tmp_path / "d.json") == r
    names = ["sgd-0", "rsgd-0", "adv-0"]
    assert r["names"] == names and r["data"] == "digits" and r["model"][0] == 64 and r["model"][-1] == 10
    assert r["canonical_function_preserved"] is True and r["figure"] == str(out / "demo.png")
    for n in names:
        e = r["networks"][n]
        assert (out / f"{n}.npz").exists()
        assert e["train_error"] < 0.25 and e["test_error"] < 0.3     # digits: a few % in practice
        assert len(e["fingerprint"]) == 64
        d = e["diagnostics"]  # the minimum's health travels with it
        assert 0 < d["signs_changed"] < 1 and all("dead" in u for u in d["units"])
        assert (d.get("random_labels_fitted") is not None) == n.startswith("adv")
        le = e["local_energy"]
        assert le["x"][0] == 0 and abs(le["mean"][0]) < 1e-12 and le["mean"][-1] > le["mean"][0]
    assert len({r["networks"][n]["fingerprint"] for n in names}) == 3
    raw, al = np.array(r["hamming"]["raw"]), np.array(r["hamming"]["aligned"])
    assert np.allclose(raw, raw.T) and np.all(np.diag(raw) == 0) and np.all((raw >= 0) & (raw < 1))
    assert al[np.triu_indices(3, 1)].mean() <= raw[np.triu_indices(3, 1)].mean()
    assert len(r["barriers"]) == 3
    for b in r["barriers"].values():
        for k in ("random_raw", "random_aligned", "searched"):
            assert 0 <= b[k] <= 1
        assert b["searched"] <= max(b["random_raw"], b["random_aligned"])
    assert r["kernel"]["ratio"] > 0 and r["seconds"] > 0


# ---------------------------------------------------------------------------- sweep
def test_sweep(tmp_path):
    """``sweep`` end to end, inline executor (the process pool and Ray: tests/test_sweep.py)."""
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"data": {"name": "digits", "n": 100}, "model": "bmlp:64-8-10",
                               "methods": ["sgd", "adv"], "seeds": [0], "epochs": 2,
                               "method_options": {"adv": {"adv_epochs": 1}},
                               "analyses": {"local_energy": {"eps": [0, 0.05], "samples": 2},
                                            "paths": ["random", "search"], "points": 5}}))
    out = tmp_path / "o"
    assert cli.main(["sweep", str(cfg), "--executor", "inline", "--out", str(out),
                     "--json", str(tmp_path / "r.json"), "-q"]) == 0
    r = _json(tmp_path / "r.json")
    assert r == _json(out / "sweep.json")
    assert r["command"] == "sweep" and r["executor"] == "inline" and r["names"] == ["sgd-0", "adv-0"]
    assert set(r["minima"]["adv-0"]) >= {"method", "seed", "file", "train_error", "local_energy",
                                         "fingerprint", "n_weights", "history"}
    assert (out / "minima" / "adv-0.npz").exists()
    [p] = r["pairs"]
    assert (p["a"], p["b"]) == ("sgd-0", "adv-0") and set(p["barriers"]) == {"random", "search"}
    assert r["distance"]["raw"][0][1] == p["distance_raw"] and "this_run_seconds" in r["timings"]


# ---------------------------------------------------------------------------- the entry point
def _entry():
    exe = shutil.which("bnn-toroid") or str(Path(sys.executable).with_name("bnn-toroid"))
    if not Path(exe).exists():
        pytest.skip("the bnn-toroid entry point is not installed")
    return exe


def test_entry_point_train_json(tmp_path):
    res = subprocess.run([_entry(), "train", "--model", "bmlp:64-8-10", "--data", "digits", "--n", "100",
                          "--epochs", "1", "-o", str(tmp_path / "n.npz"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["command"] == "train" and r["kind"] == "binary" and (tmp_path / "n.npz").exists()


def test_entry_point_errors_are_one_line(tmp_path):
    env = dict(os.environ)
    env.pop("BNN_TOROID_DEBUG", None)
    res = subprocess.run([_entry(), "analyze", str(tmp_path / "none.npz"), "--data", "digits"],
                         capture_output=True, text=True, env=env, timeout=300)
    _one_line_error(res.returncode, res.stderr, "no such file")
    assert res.returncode == 1 and res.stdout == ""      # a failure at run time, not a usage error


# ---------------------------------------------------------------------------- bad command lines
def test_error_missing_file(capsys, tmp_path):
    for argv in (["analyze", str(tmp_path / "x.npz"), *DATA], ["export", str(tmp_path / "x.npz"), "-o", "y.onnx"],
                 ["import", str(tmp_path / "x.onnx"), "-o", "y.npz"], ["sweep", str(tmp_path / "x.json")]):
        _one_line_error(*_run(argv, capsys)[::2], "no such file")


def test_error_wrong_kind_of_network(nets, capsys, tmp_path):
    _one_line_error(*_run(["export", str(nets / "ra.npz"), "-o", str(tmp_path / "r.onnx")], capsys)[::2],
                    "real-valued model")
    _one_line_error(*_run(["connect", str(nets / "a.npz"), str(nets / "ra.npz"), *DATA], capsys)[::2],
                    "same kind")
    _one_line_error(*_run(["analyze", str(nets / "a.npz"), str(nets / "ra.npz"), *DATA], capsys)[::2],
                    "mix of binary and real-valued")


def test_error_not_a_network_file(nets, capsys):
    _one_line_error(*_run(["analyze", str(nets / "a.json"), *DATA], capsys)[::2], "a.json")
    _one_line_error(*_run(["import", str(nets / "a.json"), "-o", "x.npz"], capsys)[::2], "not a valid ONNX")


def test_error_unknown_data(capsys, tmp_path):
    _one_line_error(*_run(["train", "--model", BIN, "--data", "nope", "-o", str(tmp_path / "x.npz")], capsys)[::2],
                    "unknown data set 'nope'")


@pytest.mark.parametrize("argv, needle", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["train", "--model", BIN, "--data", "digits", "-o", "x.npz", "--bogus"], "unrecognized arguments: --bogus"),
    (["connect", "a.npz"], "required: b"),
    (["train", "--model", BIN, "--data", "digits", "-o", "x.npz", "--epochs", "two"], "--epochs: expected an integer >= 1, got 'two'"),
])
def test_error_bad_command_line(capsys, argv, needle):
    line = _one_line_error(*_run(argv, capsys)[::2], needle)
    assert line.startswith("bnn-toroid")


@pytest.mark.parametrize("spec, needle", [("zzz:1", "unknown kind 'zzz'"), ("bmlp:64-x-10", "must be integers"),
                                          ("bmlp", "expected KIND:SHAPE"), ("mlp:64-10:fast", "unknown option")])
def test_error_bad_model_spec(capsys, tmp_path, spec, needle):
    _one_line_error(*_run(["train", "--model", spec, *DATA, "-o", str(tmp_path / "x.npz")], capsys)[::2], needle)
    assert not (tmp_path / "x.npz").exists()


def test_error_unknown_path_kind(nets, capsys):
    _one_line_error(*_run(["connect", str(nets / "a.npz"), str(nets / "b.npz"), *DATA, "--path", "bogus"],
                          capsys)[::2], "--path bogus is not available for binary")
    _one_line_error(*_run(["connect", str(nets / "a.npz"), str(nets / "b.npz"), *DATA, "--path", "linear"],
                          capsys)[::2], "not available for binary")
    _one_line_error(*_run(["connect", str(nets / "ra.npz"), str(nets / "rb.npz"), *DATA, "--path", "search"],
                          capsys)[::2], "not available for real-valued")


def test_error_bad_sweep(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": "digits", "model": BIN, "methods": ["sgd", "nope"], "seeds": [0],
                               "epochs": 1}))
    _one_line_error(*_run(["sweep", str(cfg), "--out", str(tmp_path / "o")], capsys)[::2], "unknown method 'nope'")
    _one_line_error(*_run(["sweep", str(cfg), "--executor", "dask"], capsys)[::2], "unknown executor 'dask'")


def test_no_subcommand_prints_help(capsys):
    rc, out, _ = _run([], capsys)
    assert rc == 2 and "usage: bnn-toroid" in out


# ---------------------------------------------------------------------------- manners (issue: bad-input probe)
def test_analyze_names_are_unique(nets, tmp_path, capsys):
    for sub in ("d1", "d2"):
        (tmp_path / sub).mkdir()
        shutil.copy(nets / ("a.npz" if sub == "d1" else "b.npz"), tmp_path / sub / "x.npz")
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(tmp_path / "d1" / "x.npz"), str(tmp_path / "d2" / "x.npz"), *DATA,
                     "--samples", "1", "--json", str(out), "-q"]) == 0
    r = _json(out)
    assert len(r["networks"]) == 2 and len(set(r["names"])) == 2      # neither is dropped
    assert r["distance"]["raw"][0][1] > 0
    rc, _, err = _run(["analyze", str(nets / "a.npz"), str(nets / "a.npz"), *DATA, "-q"], capsys)
    assert rc == 2 and "more than once" in _one_line_error(rc, err, str(nets / "a.npz"))


def test_connect_geodesic_raw_is_not_aligned(nets, tmp_path):
    res = {}
    for raw in (False, True):
        out = tmp_path / f"g{raw}.json"
        assert cli.main(["connect", str(nets / "ra.npz"), str(nets / "rb.npz"), *DATA, "--path", "geodesic",
                         "--points", "5", "--json", str(out), "-q"] + (["--raw"] if raw else [])) == 0
        res[raw] = _json(out)
    assert res[True]["aligned"] is False and res[False]["aligned"] is True
    assert res[True]["errors"] != res[False]["errors"]      # --raw skips the alignment


@pytest.mark.parametrize("argv, needle", [
    (["analyze", "{a}", *DATA, "--sigma", "0.1"], "--sigma (noise levels) applies to real-valued"),
    (["analyze", "{ra}", *DATA, "--eps", "0.1"], "--eps (flip fractions) applies to binary"),
    (["connect", "{a}", "{b}", *DATA, "--path", "random", "--method", "beam"], "--method does not apply to --path random"),
    (["analyze", "{a}", *DATA, "--figure", "{tmp}/f.jpg"], "names no format written here"),
    (["analyze", "{a}", *DATA, "--figure", "{tmp}/nofolder/f.png"], "{tmp}/nofolder/f.png: folder"),
    (["train", "--model", BIN, *DATA, "-o", "{tmp}/nofolder/x.npz"], "--output {tmp}/nofolder/x.npz: folder"),
    (["train", "--model", BIN, *DATA, "-o", "{tmp}"], "is a folder"),
    (["train", "--model", BIN, *DATA, "-o", "{tmp}/x.npz", "--json", "{tmp}/no/r.json"], "--json {tmp}/no/r.json"),
    (["export", "{a}", "-o", "{tmp}/no/x.onnx"], "--output {tmp}/no/x.onnx"),
    (["export", "{ra}", "-o", "{tmp}/x.onnx"], "real-valued model"),
    (["train", "--model", BIN, *DATA, "-o", "{tmp}/x.npz", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["sweep", "{cfg}", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["analyze", "{a}", *DATA, "--eps", "nan"], "--eps: expected a finite number, got 'nan'"),
    (["connect", "{a}", "{b}", *DATA, "--points", "1"], "--points: expected an integer >= 2, got 1"),
])
def test_usage_errors_exit_2_before_any_work(nets, tmp_path, capsys, argv, needle):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"name": "digits", "n": 100}, "model": BIN, "methods": ["sgd"],
                               "seeds": [0], "epochs": 1}))
    fill = {"a": nets / "a.npz", "b": nets / "b.npz", "ra": nets / "ra.npz", "tmp": tmp_path, "cfg": cfg}
    argv = [x.format(**fill) for x in argv]
    rc, out, err = _run(argv, capsys)
    _one_line_error(rc, err, needle.format(**fill))
    assert rc == 2
    assert not (tmp_path / "x.npz").exists()          # refused before training


def test_runtime_failures_exit_1(tmp_path, capsys):
    bad = tmp_path / "net.npz"
    bad.write_text("not a network")
    rc, _, err = _run(["analyze", str(bad), *DATA, "-q"], capsys)
    assert rc == 1 and str(bad) in _one_line_error(rc, err)


@pytest.mark.parametrize("ext, magic", [(".svg", b"<svg"), (".pdf", b"%PDF"), (".png", PNG)])
def test_figure_format_follows_the_extension(nets, tmp_path, ext, magic):
    fig = tmp_path / f"f{ext}"
    assert cli.main(["analyze", str(nets / "a.npz"), str(nets / "b.npz"), *DATA, "--samples", "1",
                     "--figure", str(fig), "-q"]) == 0
    head = fig.read_bytes()[:400]
    assert magic in head


def test_seeds_of_one_method_are_drawn_differently():
    from bnn_toroid.plots import _styles
    st = _styles(["sgd-0", "sgd-1", "rsgd-0", "rsgd-1"])
    assert st["sgd-0"]["color"] == st["sgd-1"]["color"] != st["rsgd-0"]["color"]
    assert (st["sgd-0"]["linestyle"], st["sgd-0"]["marker"]) != (st["sgd-1"]["linestyle"], st["sgd-1"]["marker"])


def test_sigterm_stops_a_sweep_and_its_workers(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"name": "digits"}, "model": "bmlp:64-256-256-10",
                               "methods": ["sgd", "rsgd"], "seeds": [0], "epochs": 400}))
    proc = subprocess.Popen([_entry(), "sweep", str(cfg), "--out", str(tmp_path / "o"), "--workers", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time
    workers, t0 = [], time.time()
    while time.time() - t0 < 120 and len(workers) < 2:     # wait for both workers to start a task
        res = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        workers = [int(p) for p in res.stdout.split()]
        time.sleep(0.5)
    assert workers, "the sweep started no worker processes"
    time.sleep(3)
    proc.terminate()
    rc = proc.wait(timeout=60)
    assert rc == 130, proc.stderr.read()
    time.sleep(1)
    alive = []
    for pid in workers:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/status").read_text().find("zombie") < 0:
                alive.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    assert alive == [], f"worker processes left running: {alive}"
    assert "interrupted" in (tmp_path / "o" / "sweep.log").read_text()
