"""The ``bnn-toroid`` command: a thin layer over the library.

Every subcommand takes ``--seed``, ``--json [FILE]`` (a machine-readable report on stdout,
or to FILE) and ``--quiet``. Errors print one line, ``bnn-toroid: error: ...``, with no
traceback unless ``BNN_TOROID_DEBUG=1``. Exit status: 0 success, 1 a failure while
running (a bad file, a failed task), 2 a usage error (a bad or inapplicable option, an
output that cannot be written: found before any work starts), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A user-facing failure while running: printed as one line, exit status 1."""


class UsageError(CommandError):
    """A bad or inapplicable option, found before any work: exit status 2."""


def _nonneg_int(text):
    """``--seed``: one rule for every subcommand and the sweep (an integer >= 0)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _pos_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _points(text):
    v = _pos_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {v}")
    return v


def _finite_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the whole usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------- helpers
def _say(args, *msg):
    if not args.quiet:
        print(*msg, file=sys.stderr if args.json == "-" else sys.stdout, flush=True)


def _emit(args, report: dict):
    """Write the JSON report (atomically to a file, or to stdout for ``--json -``)."""
    if args.json is None:
        return
    from ._files import report_text, write_report
    if args.json == "-":
        print(report_text(report))
    else:
        write_report(args.json, report)
        _say(args, f"report written to {args.json}")


def _check_output(path, what):
    """Refuse an output path that cannot be written, before the work that fills it: the
    message names the user's path, not a temporary file."""
    if path is None or path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a folder; expected a file name")
    if p.exists() and not p.is_file():
        raise UsageError(f"{what} {path}: exists and is not a regular file; expected a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {path}: exists and is not writable")


def _check_folder(path, what):
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {path}: exists and is not a folder")
    first = p
    while not first.exists():       # the nearest existing ancestor must be writable
        first = first.parent
    if not os.access(first, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {first} is not writable")


def _data(name, split, n, seed):
    from . import datasets
    try:
        return datasets.load(name, split=split, n=n, seed=seed)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CommandError(f"data {name!r}: {e}") from None


def _load_net(path):
    from .io import load_any
    if not Path(path).exists():
        raise CommandError(f"{path}: no such file")
    try:
        return load_any(path)
    except ValueError as e:
        raise CommandError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


def _kind(net, path):
    from .analysis import network_kind
    try:
        return network_kind(net, str(path))
    except TypeError as e:
        raise CommandError(str(e)) from None


# ---------------------------------------------------------------------------- subcommands
def cmd_train(args):
    import torch

    from . import train
    from .analysis import error
    from .io import build_model, is_binary_spec, save_model
    from .network import BinaryNetwork
    _check_output(args.output, "--output")
    _check_output(args.json, "--json")
    data = _data(args.data, "train", args.n, args.seed)
    norm = train.input_norm(data) if not args.no_norm else None
    torch.manual_seed(args.seed)  # before building: the seed sets the initial weights
    model = build_model(args.model, input_norm=norm)
    kw = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size)) if v is not None}
    hist = train.fit(model, data, method=args.method, epochs=args.epochs, seed=args.seed,
                     quiet=args.quiet, **kw)
    model.eval()
    test = _data(args.data, "test", None, args.seed) if args.test else None
    if is_binary_spec(args.model):
        net = BinaryNetwork.from_torch(model)
        net.save(args.output)
        kind, train_err = "binary", error(net, data)
        test_err = error(net, test) if test else None
    else:
        save_model(model, args.output, args.model, extra={"method": args.method, "seed": args.seed})
        kind, train_err = "real", error(model, data)
        test_err = error(model, test) if test else None
    report = {"command": "train", "model": args.model, "kind": kind, "data": args.data,
              "method": args.method, "seed": args.seed, "epochs": args.epochs, "output": args.output,
              "train_error": train_err, "test_error": test_err, "seconds": hist.seconds,
              "history": {"loss": hist.loss, "train_error": hist.train_error},
              "config": hist.config, "diagnostics": hist.diagnostics}
    _say(args, f"{args.method} {args.model} on {args.data}: train error {100 * train_err:.2f}%"
         + (f", test error {100 * test_err:.2f}%" if test_err is not None else "")
         + f" ({hist.seconds:.1f} s) -> {args.output}")
    _say(args, f"  {hist.summary()}")
    _emit(args, report)


def _report_names(paths):
    """One report key per network: the file stem, or more of the path where stems repeat."""
    if len({str(Path(p).resolve()) for p in paths}) != len(paths):
        seen = [p for p in paths if sum(Path(q).resolve() == Path(p).resolve() for q in paths) > 1]
        raise UsageError(f"analyze: the same network file is given more than once ({seen[0]}); "
                         "expected each file once")
    names = [Path(p).stem for p in paths]
    if len(set(names)) == len(names):
        return names
    names = [str(Path(p).with_suffix("")) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(Path(p).resolve()) for p in paths]


def cmd_analyze(args):
    """Every network through ``analysis.analyze_minimum``, every pair through
    ``analysis.pair_distances``: the numbers of the sweep's ``minimum`` and ``pair`` tasks."""
    _check_output(args.json, "--json")
    from . import analysis
    names = _report_names(args.nets)
    _check_output(args.figure, "--figure")
    if args.figure:
        from .plots import figure_format
        try:
            figure_format(args.figure)
        except ValueError as e:
            raise UsageError(str(e)) from None
    nets = [_load_net(p) for p in args.nets]
    kinds = {_kind(n, p) for n, p in zip(nets, args.nets)}
    if len(kinds) > 1:
        raise UsageError("analyze: mix of binary and real-valued networks; analyse each kind separately")
    kind = kinds.pop()
    if kind == "binary" and args.sigma is not None:
        raise UsageError("analyze: --sigma (noise levels) applies to real-valued networks; "
                         "binary networks take --eps (flip fractions)")
    if kind == "real" and args.eps is not None:
        raise UsageError("analyze: --eps (flip fractions) applies to binary networks; "
                         "real-valued networks take --sigma (noise levels)")
    grid = args.eps if kind == "binary" else args.sigma
    if grid is not None:
        try:
            grid = analysis.check_grid(grid, kind, f"--{analysis.GRID_NAMES[kind]}")
        except ValueError as e:
            raise UsageError(str(e)) from None
    data = _data(args.data, "train", args.n, args.seed)
    test = _data(args.data, "test", None, args.seed) if args.test else None
    report = {"command": "analyze", "data": args.data, "n": len(data), "networks": {}}
    for name, net in zip(names, nets):
        _say(args, f"analysing {name} ...")
        entry = analysis.analyze_minimum(net, data, test=test, grid=grid, samples=args.samples,
                                         seed=args.seed).to_dict()
        report["networks"][name] = entry
        _say(args, f"  train error {100 * entry['train_error']:.2f}%"
             + (f", test {100 * entry['test_error']:.2f}%" if test is not None else "")
             + (f", class {entry['fingerprint'][:12]}" if "fingerprint" in entry else ""))
    k = len(nets)
    raw, aligned = np.zeros((k, k)), np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            raw[i, j], aligned[i, j] = analysis.pair_distances(nets[i], nets[j])
            raw[j, i], aligned[j, i] = raw[i, j], aligned[i, j]
    report["names"] = names
    report["distance"] = {"kind": analysis.DISTANCE_KINDS[kind], "raw": raw, "aligned": aligned}
    if k > 1:
        _say(args, "pairwise distance raw / aligned:")
        for i in range(k):
            for j in range(i + 1, k):
                _say(args, f"  {names[i]} - {names[j]}: {raw[i, j]:.4f} / {aligned[i, j]:.4f}")
    if args.figure:
        from . import plots
        panels = [lambda ax: plots.local_energy(ax, {n: report["networks"][n]["local_energy"] for n in names},
                                                "ε" if kind == "binary" else "σ")]
        if k > 1:
            panels.append(lambda ax: plots.distance_matrix(ax, aligned, names, "distance (aligned)"))
        plots.save_figure(args.figure, panels, ncols=2)
        report["figure"] = args.figure
        _say(args, f"figure written to {args.figure}")
    _emit(args, report)


_CONNECT_TAKES = {"search": ("--method", "--points")}   # every other kind takes --points only


def cmd_connect(args):
    """One path through ``analysis.analyze_path``: the numbers of the sweep's ``path`` task."""
    from . import analysis
    _check_output(args.json, "--json")
    a, b = _load_net(args.a), _load_net(args.b)
    kind = _kind(a, args.a)
    if kind != _kind(b, args.b):
        raise UsageError("connect: both networks must be of the same kind")
    allowed = analysis.path_kinds(kind)
    if args.path not in allowed:
        raise UsageError(f"connect: --path {args.path} is not available for "
                         f"{'binary' if kind == 'binary' else 'real-valued'} networks; "
                         f"choose from {', '.join(allowed)}")
    given = {"--method": args.method is not None, "--points": args.points is not None}
    takes = _CONNECT_TAKES.get(args.path, ("--points",))
    for opt, was_given in given.items():
        if was_given and opt not in takes:
            raise UsageError(f"connect: {opt} does not apply to --path {args.path}; it takes "
                             f"{', '.join(takes)}")
    data = _data(args.data, "train", args.n, args.seed)
    options = {"align": not args.raw}
    if args.path == "search":
        options["method"] = "greedy" if args.method is None else args.method
    t0 = time.perf_counter()
    r = analysis.analyze_path(a, b, data, args.path, points=21 if args.points is None else args.points,
                              seed=args.seed, quiet=args.quiet, **options)
    report = {"command": "connect", "a": args.a, "b": args.b, "path": args.path, "data": args.data,
              "aligned": not args.raw, "seconds": time.perf_counter() - t0, **r.to_dict()}
    _say(args, f"{args.path} path: barrier {100 * r.barrier:.2f}% train error "
         f"(height above the endpoints {100 * r.height:.2f}%)")
    _emit(args, report)


def cmd_bench(args):
    from . import bench
    _check_output(args.json, "--json")
    report = bench.run(quick=args.quick, threads=args.threads, all_forms=args.forms == "all")
    _say(args, bench.format_table(report))
    _emit(args, report)


def cmd_export(args):
    from . import onnx as bonnx
    _check_output(args.output, "--output")
    _check_output(args.json, "--json")
    net = _load_net(args.net)
    if _kind(net, args.net) != "binary":
        raise UsageError(f"export: {args.net} is a real-valued model; export takes a frozen binary network")
    bonnx.export(net, args.output, opset=args.opset, qonnx=args.qonnx)
    _say(args, f"wrote {args.output}")
    _emit(args, {"command": "export", "network": args.net, "output": args.output, "opset": args.opset,
                 "qonnx": args.qonnx})


def cmd_import(args):
    from . import onnx as bonnx
    if not Path(args.model).exists():
        raise CommandError(f"{args.model}: no such file")
    _check_output(args.output, "--output")
    _check_output(args.json, "--json")
    try:
        net = bonnx.load(args.model)
    except ValueError as e:
        raise CommandError(str(e)) from None
    net.save(args.output)
    _say(args, net.summary())
    _say(args, f"wrote {args.output}")
    _emit(args, {"command": "import", "model": args.model, "output": args.output,
                 "n_weights": net.n_weights, "layers": net.summary().splitlines()[1:]})


def cmd_demo(args):
    import contextlib

    from .demo import run
    _check_folder(args.out, "--out")
    _check_output(args.json, "--json")
    # with the JSON report on stdout, the demo's log goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json == "-" else contextlib.nullcontext():
        report = run(out=args.out, seed=args.seed, quiet=args.quiet, quick=args.quick)
    _emit(args, report)


def cmd_sweep(args):
    from .sweep import run_sweep
    _check_folder(args.out, "--out")
    _check_output(args.json, "--json")
    report = run_sweep(args.config, executor=args.executor, workers=args.workers, out=args.out,
                       seed=args.seed, quiet=args.quiet, update=args.update)
    _emit(args, report)


# ---------------------------------------------------------------------------- parser
def _common(p):
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed, an integer >= 0 (default 0)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write a JSON report to FILE, or to stdout when no FILE is given")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no messages (progress bars are drawn only when stderr is a terminal)")


def _data_args(p, required=True):
    p.add_argument("--data", required=required, default=None if required else "digits",
                   help="dataset: digits, mnist, fashion-mnist, parity-mnist, hmm, cifar10")
    p.add_argument("--n", type=_pos_int, default=None, help="use a random subset of N training samples")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnn-toroid", description=(
        "Binary and real-valued networks with their symmetries removed: train minima, "
        "measure flatness, distances and barriers (Pittorino et al., ICML 2022)."))
    from ._version import __version__
    parser.add_argument("--version", action="version", version=f"bnn_toroid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="train SGD/RSGD/ADV binary minima on digits and compare them")
    p.add_argument("--out", default="bnn_toroid_demo", help="folder for report.json and demo.png")
    p.add_argument("--quick", action="store_true", help="smaller run (for tests)")
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model and save it (binary: frozen network)")
    p.add_argument("--model", required=True, help="e.g. bmlp:784-1001-1001-1001-10, mlp:784-512-512-10, "
                                                  "lenet:1x28x28, bconvnet:1x28x28, committee:1001-101")
    _data_args(p)
    p.add_argument("--method", default="sgd", help="sgd, rsgd, adv or sam")
    p.add_argument("--epochs", type=_pos_int, default=10)
    p.add_argument("--lr", type=_finite_float, default=None)
    p.add_argument("--batch-size", type=_pos_int, default=None)
    p.add_argument("--no-norm", action="store_true", help="do not fold the data's mean/std into the model")
    p.add_argument("--test", action="store_true", help="also report the test error")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("analyze", help="errors, local energy, distances and fingerprints of networks")
    p.add_argument("nets", nargs="+", metavar="NET", help="network files (.npz)")
    _data_args(p)
    p.add_argument("--eps", type=_finite_float, nargs="+", default=None,
                   help="flip fractions, binary networks only (default: analysis.default_grid('binary'))")
    p.add_argument("--sigma", type=_finite_float, nargs="+", default=None,
                   help="noise levels, real-valued networks only (default: analysis.default_grid('real'))")
    p.add_argument("--samples", type=_pos_int, default=10, help="draws per ε or σ")
    p.add_argument("--test", action="store_true", help="also report the test error")
    p.add_argument("--figure", default=None,
                   help="write a figure here; the extension names the format (.png, .svg, .pdf)")
    _common(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("connect", help="error barrier along a path between two networks")
    p.add_argument("a")
    p.add_argument("b")
    _data_args(p)
    p.add_argument("--path", default="random", help="binary: random, search, bend; real: linear, geodesic, bend")
    p.add_argument("--method", default=None, help="--path search only: greedy (default), beam, anneal")
    p.add_argument("--points", type=_points, default=None,
                   help="points along the path at which the error is reported, >= 2 (default 21)")
    p.add_argument("--raw", action="store_true", help="do not align b to a first")
    _common(p)
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser("bench", help="kernel throughput table against torch float32")
    p.add_argument("--threads", type=_pos_int, default=2,
                   help="threads for our kernels and for torch alike (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and a smaller local-energy case: a check that it runs, not a measurement")
    p.add_argument("--forms", choices=("chosen", "all"), default="chosen",
                   help="time each workload in the form this CPU runs (default), or in every "
                        "form it can execute, side by side")
    _common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="write a frozen binary network as ONNX (larq numerics)")
    p.add_argument("net")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset, from 13 to the installed onnx package's newest (default 17)")
    p.add_argument("--qonnx", action="store_true",
                   help="write the binarisations as QONNX BipolarQuant operators instead of Sign")
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="read an ONNX binary network (ours or larq + tf2onnx)")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    _common(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("sweep", help="train many minima (methods × seeds) and analyse all pairs")
    p.add_argument("config", help="JSON config file")
    p.add_argument("--executor", default="local", help="local (process pool), ray, or inline (this process; for debugging)")
    p.add_argument("--workers", type=_pos_int, default=2)
    p.add_argument("--out", default="sweep_out",
                   help="results folder; a re-run into it resumes (skips finished tasks)")
    p.add_argument("--update", action="store_true",
                   help="accept a folder made with a changed config: keep the finished tasks whose "
                        "inputs did not change, redo the rest")
    _common(p)
    p.set_defaults(func=cmd_sweep)
    return parser


def _check_inputs(args):
    """Missing input files fail at once, before torch and Numba are loaded."""
    for attr in ("nets", "a", "b", "net", "model", "config"):
        value = getattr(args, attr, None)
        if attr == "model" and args.command == "train":
            continue  # a model spec, not a file
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).exists():
                raise CommandError(f"{path}: no such file")


def _terminate_as_interrupt():
    """SIGTERM (``kill``, a scheduler's time limit) ends the command as Ctrl-C does: the
    cleanup runs, so a sweep stops its worker processes instead of orphaning them."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    previous = _terminate_as_interrupt()
    try:
        _check_inputs(args)
        args.func(args)
    except KeyboardInterrupt:
        print("bnn-toroid: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, ValueError, TypeError, FileNotFoundError, OSError, KeyError,
            NotImplementedError) as e:
        if os.environ.get("BNN_TOROID_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"bnn-toroid: error: {msg}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILURE
    finally:
        if previous is not None:
            import signal
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
