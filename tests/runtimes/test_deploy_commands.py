"""`--runtime NAME` on the commands that write a result: DIR/model.* is that runtime's file, the report
is measured in it (latency, accuracy, peak memory) and says what it compiled the result to."""
import json

import pytest

MODEL = "edgeslim.testing.models:TinyResNet"
DATA = ["--data", "synthetic:1,8,8:64", "--batch-size", "16", "--runs", "3", "--warmup", "1", "--threads", "1"]
FILES = {"openvino": ("model.xml", "model.bin"), "litert": ("model.tflite",), "executorch": ("model.pte",)}
COMPRESS = ["--data", "synthetic:1,8,8:64", "--batch-size", "16", "--runs", "3", "--threads", "1"]
PACKAGES = {"openvino": "openvino", "litert": "litert_torch", "executorch": "executorch"}


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("runtime", ["openvino", pytest.param("litert", marks=pytest.mark.slow),
                                     pytest.param("executorch", marks=pytest.mark.slow)])  # their lowering: 30-90 s
def test_quantize_deploys_int8_to_the_runtime(cli, tmp_path, runtime):
    pytest.importorskip(PACKAGES[runtime])
    out = tmp_path / "q"
    p = cli("quantize", MODEL, *DATA, "--calib-batches", "2", "--runtime", runtime, "--out", out, check_rc=0)
    assert all((out / f).is_file() for f in FILES[runtime]) and not (out / "model.onnx").exists()
    r = _report(out)
    assert r["result"]["artifact"] == FILES[runtime][0] and r["result"]["runtime"].startswith(runtime)
    assert r["baseline"]["runtime"].startswith(runtime)
    assert r["result"]["peak_memory_bytes"] > 0 and r["baseline"]["peak_memory_bytes"] > 0
    assert r["details"]["export_parity"]["max_abs_diff"] < 0.5
    kernels = r["details"]["kernels"]
    assert kernels["runtime"].startswith(runtime)
    if runtime == "executorch":  # the program delegates to XNNPACK; integer or float is inside the blob
        assert kernels["delegated"] == {"XnnpackBackend": 1}
    else:
        assert kernels["integer"], kernels
    assert f"wrote {out}/{FILES[runtime][0]}" in p.stdout
    assert any(f"deploy {FILES[runtime][0]}" in n for n in r["details"]["notes"])


def test_prune_writes_the_runtime_file(cli, tmp_path):
    pytest.importorskip("litert_torch")
    out = tmp_path / "p"
    p = cli("prune", MODEL, *DATA, "--ratio", "0.5", "--runtime", "litert", "--out", out, check_rc=0)
    r = _report(out)
    assert (out / "model.tflite").is_file() and r["result"]["runtime"].startswith("litert")
    assert r["details"]["kernels"]["float"] and not r["details"]["kernels"]["integer"]  # a float result
    assert (out / "checkpoint").is_dir() and "checkpoint" in p.stdout


def test_factorize_times_each_layer_in_the_runtime(cli, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "f"
    cli("factorize", "edgeslim.testing.models:TinyConvNet", *DATA, "--energy", "0.5", "--min-speedup", "100",
        "--runtime", "openvino", "--out", out, check_rc=0)
    r = _report(out)
    assert r["result"]["artifact"] == "model.xml"
    assert any("not faster in openvino" in str(v) for v in json.dumps(r["details"]).split('"')), r["details"]


def test_a_format_the_runtime_has_no_path_for_is_refused_before_work(cli, tmp_path):
    p = cli("quantize", MODEL, *DATA, "--method", "dynamic", "--runtime", "litert", "--out", tmp_path / "q",
            check_rc=2)
    assert p.stderr.startswith("error: no litert exporter registered for Dynamic") and "Traceback" not in p.stderr
    assert not (tmp_path / "q").exists()


def test_kernels_say_what_onnxruntime_runs_in_integer(tmp_path):
    import torch

    import edgeslim
    from edgeslim import runtimes
    from edgeslim.quantization import PTQ
    from edgeslim.testing.models import TinyConvNet

    m = TinyConvNet().eval()
    x = torch.randn(8, 1, 8, 8)
    rt = runtimes.get("onnxruntime")
    rt.export(m, tmp_path / "f.onnx", x[:1])
    rt.export(edgeslim.quantize(m, PTQ(calib_batches=1), data=x, progress=False), tmp_path / "q.onnx", x[:1])
    f, q = rt.kernels(tmp_path / "f.onnx"), rt.kernels(tmp_path / "q.onnx")
    assert f["float"] and not f["integer"]
    assert q["integer"] and not q["float"]


def test_compress_deploys_a_recipe_to_the_runtime(cli, tmp_path):
    pytest.importorskip("openvino")
    (tmp_path / "r.yaml").write_text("steps:\n- {type: channel_prune, ratio: 0.5}\n- {type: ptq, bits: 8, calib_batches: 2}\n")
    out = tmp_path / "c"
    p = cli("compress", MODEL, *COMPRESS, "--recipe", "r.yaml", "--runtime", "openvino",
            "--out", out, check_rc=0)
    r = _report(out)
    assert (out / "model.xml").is_file() and r["result"]["runtime"].startswith("openvino")
    assert r["details"]["kernels"]["integer"] and f"model: {out}/model.xml" in p.stdout


def test_a_recipe_the_runtime_cannot_deploy_is_refused_before_any_step(cli, tmp_path):
    (tmp_path / "r.yaml").write_text("steps:\n- {type: channel_prune, ratio: 0.5}\n- {type: half}\n")
    p = cli("compress", MODEL, *COMPRESS, "--recipe", "r.yaml", "--runtime", "executorch", "--out", tmp_path / "c",
            check_rc=2)
    assert p.stderr.startswith("error: no executorch exporter registered for Half") and not (tmp_path / "c").exists()
