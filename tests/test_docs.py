"""The README's tour and docs/cli.md's examples run as written, in order.

Each document's blocks run in a fresh folder: the README's Python tour, then its shell
tour, then every shell block of docs/cli.md (after writing its JSON config to
``sweep.json``, which the sweep example names) and its Python block. A block that
stops working fails here with the command that broke."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _blocks(text, lang, marker=None):
    head = (rf"<!-- {marker} -->\n" if marker else "") + rf"```{lang}\n(.*?)```"
    return [m.group(1) for m in re.finditer(head, text, re.S)]


def _env():
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("BNN_TOROID_DEBUG", None)
    return env


def _run_python(code, cwd):
    path = cwd / "block.py"
    path.write_text(code)
    r = subprocess.run([sys.executable, str(path)], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, f"python block failed:\n{code}\n--- stderr\n{r.stderr[-4000:]}"
    return r.stdout


def _commands(block):
    """The block's commands: comments dropped, backslash continuations joined."""
    out, cur = [], ""
    for line in block.splitlines():
        line = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


def _run_shell(block, cwd):
    for cmd in _commands(block):
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=_env(), capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"{cmd!r} exited {r.returncode}:\n{r.stderr[-4000:]}"


def test_commands_split_as_a_shell_reads_them():
    block = "mkdir -p a  # make it\n# a comment line\nbnn-toroid analyze x \\\n    --json r.json\n"
    assert _commands(block) == ["mkdir -p a", "bnn-toroid analyze x      --json r.json"]
    assert shlex.split(_commands(block)[1])[-1] == "r.json"


def test_readme_tour_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    (code,) = _blocks(text, "python", "tour")
    out = _run_python(code, tmp_path)
    assert "test error" in out and "searched barrier" in out
    (shell,) = _blocks(text, "bash", "cli-tour")
    _run_shell(shell, tmp_path)
    for f in ("sgd0.npz", "sgd0.onnx", "nets/sgd0.npz", "nets/rsgd1.npz", "analysis.png",
              "report.json", "sgd0_back.npz"):
        assert (tmp_path / f).is_file(), f


def test_cli_examples_run_as_written(tmp_path):
    text = (ROOT / "docs" / "cli.md").read_text()
    (config,) = _blocks(text, "json")
    (tmp_path / "sweep.json").write_text(config)
    shell = _blocks(text, "bash")
    assert len(shell) >= 8, "docs/cli.md: one example block per subcommand"
    for block in shell:
        _run_shell(block, tmp_path)
    for f in ("demo_quick/report.json", "nets/real1.npz", "analysis.json", "bench.json",
              "rsgd0_qonnx.onnx", "rsgd0_back.npz", "sweep_out/sweep.json"):
        assert (tmp_path / f).is_file(), f
    (code,) = _blocks(text, "python")
    out = _run_python(code, tmp_path)   # the same config and folder: every task is resumed
    float(out.strip().splitlines()[-1])


def test_the_forms_table_of_performance_md_is_the_policy():
    """docs/performance.md, "Kernel forms by CPU": one row per workload, one column per
    CPU class, each cell's first form name being what the policy chooses there."""
    from bnn_toroid.kernels import forms
    text = (ROOT / "docs" / "performance.md").read_text()
    section = text.split("## Kernel forms by CPU", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    classes = [need for _, need in forms.CLASSES]
    seen = set()
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        workload = cells[0].split("`")[1]
        seen.add(workload)
        for need, cell in zip(classes, cells[1:]):
            feats = set(need) | ({"avx512vnni"} if "avx512bw" in need else set())
            assert cell.split("`")[1] == forms.choose(workload, feats).name, (workload, cell)
    assert seen == set(forms.POLICY)
