"""The tables of docs/results.md, from the study's sweep reports.

    python experiments/study/tables.py [OUT_ROOT] [--untrained]

reads ``OUT_ROOT/NAME/sweep.json`` for every config of ``run.sh`` that has finished and
prints, per study, one row per minimum (errors, health, local energy, training time)
and one row per pair kind (means over the pairs of that kind). ``--untrained`` adds the
reference the aligned distances are judged against: two untrained networks of the
study's model, aligned the same way. Nothing here is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

STUDIES = ("binary_fmnist", "binary_fmnist_1001", "real_mnist", "real_fmnist")


def _pct(v, digits=2):
    return "–" if v is None else f"{100 * v:.{digits}f}"


def minima_table(rep: dict) -> str:
    binary = rep["kind"] == "binary"
    le = next(iter(rep["minima"].values()))["local_energy"]
    grid = ", ".join(f"{x:g}" for x in le["x"][1:])
    head = ["minimum", "train err %", "test err %",
            "signs changed %" if binary else "relative change (layers)",
            "dead / constant units", "random labels: err % (epochs)",
            f"δE at {'ε' if binary else 'σ'} = {grid} (%)", "train s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in rep["names"]:
        m = rep["minima"][name]
        d = m.get("diagnostics") or {}
        if binary:
            moved = _pct(d.get("signs_changed"), 1)
            if d.get("signs_changed_since_adv") is not None:
                moved += f" ({_pct(d['signs_changed_since_adv'], 1)} since ADV)"
        else:
            moved = ", ".join(f"{l['relative_change']:.2f}" for l in d.get("layers", []))
        units = ", ".join(f"{u['dead']}/{u['constant']}" for u in d.get("units", []))
        adv = "–"
        if d.get("random_label_error") is not None:
            adv = f"{_pct(d['random_label_error'], 1)} ({d.get('adv_epochs_run')})"
        rise = ", ".join(f"{100 * v:.2f}" for v in m["local_energy"]["mean"][1:])
        secs = rep["timings"]["train_seconds"].get(name)
        rows.append(f"| {name} | {_pct(m['train_error'])} | {_pct(m.get('test_error'))} | {moved} | "
                    f"{units} | {adv} | {rise} | {secs:.0f} |")
    return "\n".join(rows)


def _pair_kind(a: str, b: str) -> str:
    order = ("sgd", "rsgd", "adv", "sam")
    ka, kb = sorted((a.split("-")[0], b.split("-")[0]), key=order.index)
    return f"{ka}–{kb}"


def pairs_table(rep: dict) -> str:
    paths = [p["name"] for p in rep["config"]["analyses"]["paths"]]
    groups = defaultdict(list)
    for p in rep["pairs"]:
        groups[_pair_kind(p["a"], p["b"])].append(p)
    head = ["pairs", "n", "distance raw / aligned"] + [f"{n} barrier %" for n in paths]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, ps in groups.items():
        def mean(f):
            return sum(f(p) for p in ps) / len(ps)
        cells = [kind, str(len(ps)),
                 f"{mean(lambda p: p['distance_raw']):.4f} / {mean(lambda p: p['distance_aligned']):.4f}"]
        cells += [f"{100 * mean(lambda p, n=n: p['barriers'][n]['barrier']):.2f}" for n in paths]
        rows.append("| " + " | ".join(cells) + " |")
    extra = [p for p in rep["pairs"] for n in paths if "errors_search_data" in p["barriers"][n]]
    if extra:
        rows.append("")
        rows.append("Searches (barrier on the search data → on the full training set, %):")
        rows.append("")
        for p in rep["pairs"]:
            for n in paths:
                b = p["barriers"][n]
                if "errors_search_data" in b:
                    rows.append(f"- {p['a']}~{p['b']} {n} (search_n {b.get('search_n')}): "
                                f"{100 * max(b['errors_search_data']):.2f} → {100 * b['barrier']:.2f}, "
                                f"{b.get('n_moves')} moves")
    return "\n".join(rows)


def timings(rep: dict) -> str:
    t = rep["timings"]
    return (f"tasks {t['task_seconds_sum'] / 3600:.2f} CPU-h in all "
            f"(training {sum(t['train_seconds'].values()) / 3600:.2f} h)")


def untrained_distance(rep: dict, seeds=(0, 1)) -> str:
    """Aligned distance of two untrained networks of the study's model, measured the way
    the sweep measures its pairs."""
    import torch

    from bnn_toroid import BinaryNetwork, align, distance, io, train
    from bnn_toroid.datasets import load

    cfg = rep["config"]
    data = load(cfg["data"]["name"], split="train")
    norm = None if cfg.get("no_norm") else train.input_norm(data)
    nets = []
    for s in seeds:   # the sweep seeds torch the same way before it builds a minimum
        torch.manual_seed(s)
        model = io.build_model(cfg["model"], input_norm=norm).eval()
        nets.append(BinaryNetwork.from_torch(model) if rep["kind"] == "binary" else model)
    a, b = nets
    if rep["kind"] == "binary":
        return f"untrained pair: Hamming raw {distance(a, b):.4f}, aligned {distance(a, align(b, reference=a)):.4f}"
    return (f"untrained pair: raw {distance(a, b, kind='raw'):.4f}, "
            f"normalized_aligned {distance(a, b, kind='normalized_aligned'):.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="/work/study_runs")
    ap.add_argument("--untrained", action="store_true")
    args = ap.parse_args(argv)
    for name in STUDIES:
        path = Path(args.root) / name / "sweep.json"
        if not path.is_file():
            print(f"## {name}: no report yet ({path})\n")
            continue
        rep = json.loads(path.read_text())
        print(f"## {name}: {rep['config']['model']}, {rep['config']['epochs']} epochs, {timings(rep)}\n")
        print(minima_table(rep), "\n")
        print(pairs_table(rep), "\n")
        if args.untrained:
            print(untrained_distance(rep), "\n")


if __name__ == "__main__":
    sys.exit(main())
