"""The layout of the bnn_toroid.onnx package: its op table covers every op the importer
and its docs claim, each op-family module registers its own ops, unknown ops are named,
modules stay small, exports follow the umask, and bnn_toroid.larq uses public names only.
"""
from __future__ import annotations

import ast
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import bnn_toroid  # noqa: E402
from bnn_toroid import onnx as bo  # noqa: E402
from bnn_toroid.network import BinaryNetwork, Dense  # noqa: E402
from bnn_toroid.onnx import common, exporter, importer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bnn_toroid" / "onnx"
FAMILIES = ("affine", "layout", "linear", "norm_pool", "sign")
ORIGINAL_NAMES = ("OnnxImportError", "load", "export", "export_torch", "QONNX_DOMAIN",
                  "MAX_TENSOR_ELEMENTS", "MIN_OPSET")


def table_ops() -> set[str]:
    return {t for _, t in common.OPS}


def is_op(name: str) -> bool:
    return name == "BipolarQuant" or onnx.defs.has(name)


# ---------------------------------------------------------------------------- op table
def test_every_op_is_registered_by_its_family_module():
    assert common.OPS, "the op-family modules registered nothing"
    for (domain, op_type), handler in common.OPS.items():
        module = handler.__module__.rsplit(".", 1)[-1]
        assert module in FAMILIES, (op_type, handler.__module__)
        assert domain in ("", common.QONNX_DOMAIN), (op_type, domain)
        assert is_op(op_type), op_type
    assert {d for d, _ in common.OPS} == {"", common.QONNX_DOMAIN}
    # dispatch is the table, not method names
    assert not [n for n in dir(importer.Importer) if n.startswith("_op_")]


def test_an_op_registered_twice_is_refused():
    with pytest.raises(RuntimeError, match="registered twice"):
        common.op("Conv")(lambda imp, node, ins, attrs: None)
    assert common.OPS[("", "Conv")].__module__ == "bnn_toroid.onnx.linear"


def _docs_op_rows() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "interop.md").read_text()
    section = text.split("## Inside `bnn_toroid.onnx`", 1)[1].split("\n## ", 1)[0]
    table = section.split("| module | operators |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        module_cell, ops_cell = [c.strip() for c in line.strip("|").split("|")]
        module = re.match(r"`(\w+)\.py`", module_cell).group(1)
        rows[module] = set(re.findall(r"`([A-Za-z]+)`", ops_cell))
    return rows


def test_the_docs_list_of_ops_matches_the_table():
    rows = _docs_op_rows()
    for family in FAMILIES:
        registered = {t for (_, t), h in common.OPS.items()
                      if h.__module__ == f"bnn_toroid.onnx.{family}"}
        assert rows.get(family) == registered, family
    assert rows.get("importer") == set(importer.WALK_OPS)
    assert set().union(*rows.values()) == table_ops() | set(importer.WALK_OPS)


def test_every_op_the_docstrings_name_is_in_the_table():
    """``load``'s docstring lists the patterns it reads; the package and importer
    docstrings list the ops of each family module."""
    named = set()
    for span in re.findall(r"``(.+?)``", bo.load.__doc__, re.S):
        named |= {w for w in re.findall(r"\b[A-Z][A-Za-z]+\b", span) if is_op(w)}
    assert {"Sign", "Where", "MatMul", "Conv", "BatchNormalization", "MaxPool",
            "BipolarQuant"} <= named
    assert named <= table_ops() | set(importer.WALK_OPS), named - table_ops()
    for doc in (bo.__doc__, importer.__doc__):
        listed = dict(re.findall(r"\b(\w+)`{1,2}\s+\(([A-Z][^)]*)\)", doc))
        assert set(listed) == set(FAMILIES), listed
        for family, ops in listed.items():
            names = {w for w in re.findall(r"\b[A-Z][a-z][A-Za-z]*\b", ops)}
            want = {t for (_, t), h in common.OPS.items()
                    if h.__module__ == f"bnn_toroid.onnx.{family}"}
            assert names == want, (family, names ^ want)


def _relu_model(domain=""):
    x = helper.make_node("Relu", ["x"], ["r"], name="n1_Relu", domain=domain)
    w = numpy_helper.from_array(np.ones((6, 3), np.float32), "w")
    mm = helper.make_node("MatMul", ["r", "w"], ["y"], name="n2_MatMul")
    g = helper.make_graph([x, mm], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          initializer=[w])
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=imports)


def test_an_unknown_op_names_the_node_and_the_op():
    with pytest.raises(bo.OnnxImportError) as e:
        bo.load(_relu_model())
    assert str(e.value) == ("node 'n1_Relu' (op Relu) is not supported by the binary-network "
                            "importer (operand kinds: ['Act'])")  # as docs/interop.md shows
    with pytest.raises(bo.OnnxImportError) as e:
        bo.load(_relu_model(common.QONNX_DOMAIN))
    assert str(e.value) == ("node 'n1_Relu' (op Relu): QONNX op Relu is not supported "
                            "(only BipolarQuant)")
    with pytest.raises(bo.OnnxImportError) as e:
        bo.load(_relu_model("com.example"))
    assert str(e.value) == "node 'n1_Relu' (op Relu): custom domain 'com.example' is not supported"


def test_the_exporter_has_one_emitter_per_layer_type():
    from bnn_toroid import network

    assert set(exporter.EMITTERS) == {"Dense", "Conv2d", "MaxPool2d"}
    for kind in exporter.EMITTERS:
        assert isinstance(getattr(network, kind), type)
    with pytest.raises(RuntimeError, match="two emitters"):
        exporter.emitter("Dense")(lambda s, i, layer, last: None)


# ---------------------------------------------------------------------------- layout
def test_no_module_of_the_package_is_over_500_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PKG.glob("*.py")}
    assert {"__init__.py", "common.py", "graph.py", "values.py", "importer.py",
            "exporter.py"} | {f"{f}.py" for f in FAMILIES} <= set(sizes)
    assert not (ROOT / "bnn_toroid" / "onnx.py").exists()
    assert max(sizes.values()) <= 500, sizes


def test_the_public_names_stay_where_they_were():
    assert bo.__all__[:len(ORIGINAL_NAMES)] == list(ORIGINAL_NAMES)
    for name in bo.__all__:
        assert getattr(bo, name) is not None
        assert not name.startswith("_")
    ns = {}
    exec(f"from bnn_toroid.onnx import {', '.join(bo.__all__)}", ns)  # noqa: S102
    assert ns["load"] is importer.load and ns["export"] is exporter.export
    assert bnn_toroid.onnx is bo and bnn_toroid.onnx.load is bo.load
    assert issubclass(bo.OnnxImportError, ValueError)
    assert bo.check_opset.__doc__ and bo.tf_same.__doc__
    assert bo.tf_same(5, 3, 2) == (1, 1) and bo.tf_same(4, 3, 2) == (0, 1)


def test_larq_uses_only_public_names_of_the_onnx_package():
    tree = ast.parse((ROOT / "bnn_toroid" / "larq.py").read_text())
    aliases, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module == "onnx" or (node.module or "").startswith("onnx."):
                used |= {a.name for a in node.names}
            elif node.module is None:
                aliases |= {a.asname or a.name for a in node.names if a.name == "onnx"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            used.add(node.attr)
    assert used, "larq.py no longer uses bnn_toroid.onnx?"
    assert not [n for n in used if n.startswith("_")], used
    assert used <= set(bo.__all__), used - set(bo.__all__)


# ---------------------------------------------------------------------------- files
def _net():
    rng = np.random.default_rng(0)
    w1 = np.where(rng.random((5, 8)) < 0.5, -1, 1).astype(np.int8)
    w2 = np.where(rng.random((3, 5)) < 0.5, -1, 1).astype(np.int8)
    return BinaryNetwork([Dense(w1, np.zeros(5, np.int64)), Dense(w2)], (8,), "flat",
                         binarize_input=True)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_an_exported_file_follows_the_umask(mask, umask, tmp_path):
    umask(mask)
    p = tmp_path / "net.onnx"
    bo.export(_net(), p)
    assert _mode(p) == 0o666 & ~mask
    assert bo.load(p).equals(_net())
    os.chmod(p, 0o604)  # a file it replaces keeps its bits
    bo.export(_net(), p, qonnx=True)
    assert _mode(p) == 0o604
    assert sorted(os.listdir(tmp_path)) == ["net.onnx"]


def test_a_torch_export_follows_the_umask(umask, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    umask(0o027)
    p = tmp_path / "sub" / "t.onnx"  # the folders above are created
    model = torch.nn.Linear(4, 3)
    bo.export_torch(model, p, torch.zeros(2, 4))
    assert _mode(p) == 0o640
    assert sorted(os.listdir(p.parent)) == ["t.onnx"]
