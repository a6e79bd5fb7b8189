"""A sweep interrupted mid-way resumes where it stopped and ends with the same results as
an uninterrupted run; a folder refuses another config unless told to update it; a folder
written before ``bnn_toroid.analysis`` existed still resumes."""
import json
import math
import shutil
from pathlib import Path

import pytest

from bnn_toroid import sweep as S
from bnn_toroid.io import load_any
from bnn_toroid.symmetry.binary import fingerprint

CFG = {
    "data": {"name": "digits", "n": 120},
    "model": "bmlp:64-8-10",
    "methods": ["sgd"],
    "seeds": [0, 1],
    "epochs": 2,
    "analyses": {"local_energy": {"eps": [0.0, 0.05], "samples": 2},
                 "paths": ["random", {"kind": "random", "name": "raw", "align": False}],
                 "points": 5},
}


def _cfg(tmp_path, cfg, name="c.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def _interrupt_paths(monkeypatch):
    """Make every path task raise KeyboardInterrupt (as Ctrl-C would) in the inline executor."""
    def boom(spec):
        raise KeyboardInterrupt
    monkeypatch.setitem(S._TASKS, "path", boom)


def test_interrupted_sweep_resumes_to_the_same_results(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, CFG)
    fresh = S.run_sweep(cfg, executor="inline", out=tmp_path / "fresh", quiet=True)
    assert fresh["resumed"] == []

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_paths(m)
        with pytest.raises(KeyboardInterrupt):
            S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    assert "interrupted" in (out / "sweep.log").read_text()
    assert not (out / "sweep.json").exists()                      # no half-finished report
    done = sorted(p.stem for p in (out / "state" / "train").glob("*.json"))
    assert done == ["sgd-0", "sgd-1"]

    again = S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    assert {"train:sgd-0", "train:sgd-1"} <= set(again["resumed"])
    assert not any(r.startswith("path:") for r in again["resumed"])
    assert S.results_of(again) == S.results_of(fresh)

    third = S.run_sweep(cfg, executor="inline", out=out, quiet=True)   # nothing left to do
    assert len(third["resumed"]) == 2 * 2 + 1 * (1 + 2)
    assert S.results_of(third) == S.results_of(fresh)


def test_changed_config_refused_unless_update(tmp_path):
    out = tmp_path / "o"
    S.run_sweep(_cfg(tmp_path, CFG), executor="inline", out=out, quiet=True)
    changed = json.loads(json.dumps(CFG))
    changed["analyses"]["points"] = 7                             # only the paths change
    cfg2 = _cfg(tmp_path, changed, "c2.json")
    with pytest.raises(S.SweepError, match="--update"):
        S.run_sweep(cfg2, executor="inline", out=out, quiet=True)
    r = S.run_sweep(cfg2, executor="inline", out=out, quiet=True, update=True)
    # training, local energy and distances are kept; every path is redone
    assert {"train:sgd-0", "train:sgd-1", "minimum:sgd-0", "minimum:sgd-1", "pair:sgd-0~sgd-1"} \
        == set(r["resumed"])
    assert all(len(b["errors"]) == 7 for b in r["pairs"][0]["barriers"].values())
    assert json.loads((out / "sweep_config.json").read_text())["config"]["analyses"]["points"] == 7


def test_edited_minimum_file_invalidates_its_analyses(tmp_path):
    """The analyses of a minimum depend on its file's content, not its name."""
    out = tmp_path / "o"
    cfg = _cfg(tmp_path, CFG)
    S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    (out / "state" / "train" / "sgd-1.json").unlink()               # retrain sgd-1 ...
    r = S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    # ... which gives the same bytes (seeded), so its analyses stay valid
    assert "minimum:sgd-1" in r["resumed"] and "train:sgd-1" not in r["resumed"]


V1 = Path(__file__).parent / "data" / "sweep_v1"


def _close(a, b, rel):
    """Equal JSON values, floats within ``rel`` (0: exactly)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and rel:
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def _no_fingerprints(results):
    return {**results, "minima": {k: {f: v for f, v in rec.items() if f != "fingerprint"}
                                  for k, rec in results["minima"].items()}}


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_a_folder_from_before_the_analysis_layer_resumes(tmp_path, kind):
    """tests/data/sweep_v1: folders written by the sweep before the analyses moved to
    ``bnn_toroid.analysis``. Every task is taken from its state file (the task specs, the
    normalised config and the result records are unchanged), and the analyses recomputed
    on the stored minima give the stored numbers (binary ones exactly; real-valued
    distances are float sums, equal here but allowed rounding on another CPU)."""
    out = tmp_path / kind
    shutil.copytree(V1 / kind, out)
    old = S.results_of(json.loads((out / "sweep.json").read_text()))
    cfg = str(V1 / f"{kind}.json")
    r = S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    assert sorted(r["resumed"]) == sorted(r["timings"]["tasks"]) and len(r["resumed"]) >= 7
    assert S.results_of(r) == old
    for task in ("minimum", "pair", "path"):
        shutil.rmtree(out / "state" / task)
    again = S.run_sweep(cfg, executor="inline", out=out, quiet=True)
    assert sorted(again["resumed"]) == ["train:sgd-0", "train:sgd-1"]
    # fingerprints hash their own canonical encoding since these folders were written
    # (README, "Changes to public names"); every other number is recomputed the same
    new = S.results_of(again)
    assert _close(_no_fingerprints(new), _no_fingerprints(old), 0 if kind == "binary" else 1e-9)
    for name, rec in new["minima"].items():
        if "fingerprint" in rec:
            assert rec["fingerprint"] == fingerprint(load_any(out / "minima" / f"{name}.npz"))
