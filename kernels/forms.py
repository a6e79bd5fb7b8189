"""The kernel forms, and which one runs on this CPU.

A *workload* is one product the package computes (a binary GEMM, the hidden layers of
an MLP chain, its first layer on pixels). A *form* is one way to compute it: its
kernel, the weight layout it builds and the CPU features it needs to execute. Every
form of a workload gives bit-identical results; they differ only in speed, and which is
fastest depends on the CPU (docs/performance.md, "Kernel forms by CPU").

The choice is made in one place, :func:`choose`, a pure function of a feature set, so
the policy for every CPU class can be tested on any machine. :func:`chosen` applies it
to this host's features (read once), unless overridden:

- by argument, where an entry point takes ``form=`` (:func:`bnn_toroid.kernels.binary_gemm`);
- by the environment variable ``BNN_TOROID_FORMS``, e.g. ``gemm=harley_seal,hidden=tiles``;
- in code, with :func:`override` (a context manager, for tests and benchmarks).

A form that needs a feature the host lacks is refused with :class:`FormError`: its
compiled code would raise an illegal-instruction fault. Forms written in generic LLVM
IR need nothing and run everywhere, only slower where the CPU lacks the instruction
they were written for.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from ._features import target_features

ENV = "BNN_TOROID_FORMS"


class FormError(ValueError):
    """An unknown workload or form, or a form this CPU cannot execute."""


@dataclass(frozen=True)
class Form:
    """One way to compute a workload.

    Attributes:
        workload: what it computes ("gemm", "conv", "hidden", "first", "first_one").
        name: its name, unique within the workload; the same word everywhere (bench
            tables, ``BNN_TOROID_FORMS``, ``form=`` arguments).
        needs: LLVM feature names the CPU must have to execute it (empty: generic IR).
        layout: the weight layout it reads.
        kernel: the compiled entry, or the name of the layout/kernel pair its caller uses.
        doc: one line on how it works.
    """

    workload: str
    name: str
    needs: frozenset = field(default_factory=frozenset)
    layout: str = ""
    kernel: object = None
    doc: str = ""


_FORMS: dict[str, dict[str, Form]] = {}

# CPU classes, most capable first: (name, features that define it).
CLASSES = (
    ("avx512_vpopcntdq", frozenset({"avx512f", "avx512bw", "avx512vpopcntdq"})),
    ("avx512bw", frozenset({"avx512f", "avx512bw"})),
    ("avx2", frozenset({"avx2"})),
    ("generic", frozenset()),
)

# The policy: per workload, the form each CPU class runs (measured; docs/performance.md,
# "Kernel forms by CPU"). A class missing here takes the next class's entry.
POLICY = {
    # on an Intel Emerald Rapids (1 thread, first measure) the vpopcnt sums on the column
    # tiles take 0.83x the ternary-logic adders' time; those beat the vpopcnt 2x4 tiles
    # (0.74-0.95x their time) and generic Harley-Seal (1.30x)
    "gemm": {"avx512_vpopcntdq": "vpopcnt_tiles", "avx512bw": "harley_seal_ternlog",
             "generic": "harley_seal"},
    # conv 3x3 16x32x32x128 on the Emerald Rapids: vpopcnt tiles 0.69x, ternlog 0.85x
    # generic Harley-Seal's time (1 thread)
    "conv": {"avx512_vpopcntdq": "vpopcnt_tiles", "avx512bw": "harley_seal_ternlog",
             "generic": "harley_seal"},
    # hidden (64, 1024) x (1024, 1024) on the Emerald Rapids: vpopcnt tiles 0.56x the
    # Harley-Seal tiles' time (1 thread); those take 0.69-0.81x the ymm lookups' time
    "hidden": {"avx512_vpopcntdq": "vpopcnt_tiles", "avx512bw": "tiles", "avx2": "nibbles",
               "generic": "tiles"},
    # vpdpbusd: 0.67x the lookup form's time at (64, 784) x (784, 1024) on 2 threads;
    # one sample stays with the lookups (the VNNI weights, 4x their bytes, leave L2)
    "first": {"avx512bw": "vnni", "avx2": "lookup", "generic": "bytes"},
    "first_one": {"avx2": "lookup", "generic": "signs"},
}


def register(form: Form) -> Form:
    """Add ``form`` to the registry (once per workload and name)."""
    forms = _FORMS.setdefault(form.workload, {})
    if form.name in forms:
        raise FormError(f"form {form.workload}.{form.name} is registered twice")
    forms[form.name] = form
    return form


def forms(workload: str) -> dict[str, Form]:
    """The registered forms of ``workload``, by name."""
    _load()
    if workload not in _FORMS:
        raise FormError(f"unknown workload {workload!r}; known: {', '.join(sorted(_FORMS))}")
    return dict(_FORMS[workload])


def cpu_class(features) -> str:
    """The most capable class of :data:`CLASSES` whose features are all in ``features``."""
    features = frozenset(features)
    return next(name for name, need in CLASSES if need <= features)


def choose(workload: str, features, override: str | None = None) -> Form:
    """The form of ``workload`` for a CPU with ``features`` (a set of LLVM feature
    names): ``override`` when given, else :data:`POLICY`'s entry for the CPU's class
    (or the next less capable class that has one). Pure: the same arguments always give
    the same form, whatever the host."""
    features = frozenset(features)
    table = forms(workload)
    if override is not None:
        form = table.get(override)
        if form is None:
            raise FormError(f"unknown form {override!r} for {workload}; known: "
                            f"{', '.join(sorted(table))}")
        missing = form.needs - features
        if missing:
            raise FormError(f"form {workload}.{override} needs the CPU feature(s) "
                            f"{', '.join(sorted(missing))}, which this CPU lacks; it can run: "
                            f"{', '.join(runnable(workload, features))}")
        return form
    names = [name for name, _ in CLASSES]
    for cls in names[names.index(cpu_class(features)):]:
        name = POLICY[workload].get(cls)
        if name is not None and table[name].needs <= features:
            return table[name]
    raise FormError(f"no form of {workload} runs on a CPU with features {sorted(features)}")


def runnable(workload: str, features=None) -> list[str]:
    """Names of the forms of ``workload`` that a CPU with ``features`` (default: this
    host) can execute."""
    features = host_features() if features is None else frozenset(features)
    return sorted(n for n, f in forms(workload).items() if f.needs <= features)


_HOST = None


def host_features() -> frozenset:
    """LLVM feature names of the CPU that Numba compiles for (read once).

    This is the host CPU unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name another
    target; the compiled code then has that target's instructions, so its features are
    the ones that count."""
    global _HOST
    if _HOST is None:
        _HOST = target_features()
    return _HOST


_OVERRIDES: dict[str, str] = {}


def _env_overrides() -> dict[str, str]:
    text = os.environ.get(ENV, "").strip()
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        workload, sep, name = item.partition("=")
        if not sep or not workload.strip() or not name.strip():
            raise FormError(f"{ENV}={text!r}: entry {item!r}; expected WORKLOAD=FORM, e.g. "
                            "gemm=harley_seal")
        out[workload.strip()] = name.strip()
    for workload in out:
        forms(workload)  # an unknown workload is an error, not ignored
    return out


_CHOSEN: dict = {}  # workload -> Form, cleared when an override starts or ends
_ENV = None          # BNN_TOROID_FORMS, parsed at the first choice


def chosen(workload: str, form: str | None = None) -> Form:
    """The form of ``workload`` that runs here: ``form`` when given, else an
    :func:`override` in force, else ``BNN_TOROID_FORMS`` (read at the first choice of
    the process), else :func:`choose` on this host's features. Cached: a frozen
    network's layers call this on every product."""
    global _ENV
    if form is not None:
        return choose(workload, host_features(), form)
    hit = _CHOSEN.get(workload)
    if hit is None:
        if _ENV is None:
            _ENV = _env_overrides()
        name = _OVERRIDES.get(workload) or _ENV.get(workload)
        hit = _CHOSEN[workload] = choose(workload, host_features(), name)
    return hit


@contextlib.contextmanager
def override(**names):
    """``with override(gemm="harley_seal"):`` runs the named forms inside the block
    (checked as :func:`choose` checks an override). Networks built inside the block
    keep the layouts of the forms they were built with."""
    for workload, name in names.items():
        choose(workload, host_features(), name)
    saved = dict(_OVERRIDES)
    _OVERRIDES.update(names)
    _CHOSEN.clear()
    try:
        yield
    finally:
        _OVERRIDES.clear()
        _OVERRIDES.update(saved)
        _CHOSEN.clear()


def report() -> dict:
    """What this host runs: its CPU class, the features the policy and the forms read,
    and the chosen form of every workload (``bnn-toroid bench`` prints it)."""
    feats = host_features()
    _load()
    needed = [f.needs for table in _FORMS.values() for f in table.values()]
    read = sorted(set().union(*(need for _, need in CLASSES), *needed) & feats)
    return {"cpu_class": cpu_class(feats), "features": read,
            "forms": {w: chosen(w).name for w in sorted(POLICY)}}


def _load():
    # the kernel modules register their forms when imported
    from . import chain, conv, gemm  # noqa: F401
