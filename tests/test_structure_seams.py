"""Every runtime call goes through the Runtime seam: only edgeslim/runtimes/ imports onnxruntime
(and quantization/dynamic.py, which uses ONNX Runtime's quantize_dynamic tool, not its sessions)."""
import ast
from pathlib import Path

import edgeslim

PACKAGE = Path(edgeslim.__file__).resolve().parent
ALLOWED = ("runtimes/", "quantization/dynamic.py")


def onnxruntime_importers(root: Path) -> list[str]:
    """'path:line' of every import of onnxruntime (plain, from-, or importlib) outside ALLOWED."""
    found = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in ALLOWED):
            continue
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
                names = [str(node.args[0].value)]
            else:
                continue
            if any(n == "onnxruntime" or n.startswith("onnxruntime.") for n in names):
                found.append(f"{rel}:{node.lineno}")
    return found


def test_only_the_runtimes_package_imports_onnxruntime():
    assert onnxruntime_importers(PACKAGE) == []


def test_the_check_finds_every_form_of_import(tmp_path):
    (tmp_path / "runtimes").mkdir()
    (tmp_path / "runtimes" / "ok.py").write_text("import onnxruntime\n")
    (tmp_path / "quantization").mkdir()
    (tmp_path / "quantization" / "dynamic.py").write_text("from onnxruntime.quantization import quantize_dynamic\n")
    (tmp_path / "a.py").write_text("import onnxruntime as ort\n")
    (tmp_path / "b.py").write_text("def f():\n    from onnxruntime import InferenceSession\n")
    (tmp_path / "c.py").write_text("import importlib\nimportlib.import_module('onnxruntime')\n")
    (tmp_path / "d.py").write_text("from .runtimes import onnxruntime\nimport onnxruntime_extensions\n")
    assert onnxruntime_importers(tmp_path) == ["a.py:1", "b.py:2", "c.py:2"]
