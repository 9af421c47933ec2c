"""`edgeslim export --runtime NAME`: each runtime's artifact, verified in it; bad combinations refused."""
import json

import pytest


def test_export_to_openvino_ir(cli, tmp_path):
    pytest.importorskip("openvino")
    p = cli("export", "edgeslim.testing.models:TinyConvNet", "--input-shape", "1,1,8,8", "--runtime", "openvino",
            "--out", tmp_path / "m.xml", "--json", check_rc=0)
    res = json.loads(p.stdout)
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()
    assert res["size_bytes"] == (tmp_path / "m.xml").stat().st_size + (tmp_path / "m.bin").stat().st_size
    assert res["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("args, said", [
    (["--runtime", "litert", "--out", "m.onnx"], "must name a .tflite file for --runtime litert"),
    (["--runtime", "executorch", "--out", "m.pte", "--opset", "17"], "options of the ONNX export"),
    (["--runtime", "nosuch", "--out", "m.onnx"], "invalid choice: 'nosuch'"),
])
def test_bad_runtime_combinations_exit_2(cli, args, said):
    p = cli("export", "lenet5", *args, check_rc=2)
    assert said in p.stderr and "Traceback" not in p.stderr
