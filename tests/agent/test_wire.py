"""The wire format's header and the token file: the checks both sides share."""
import json
import os

import pytest

from edgeslim.agent.wire import MAX_INPUT_ELEMENTS, Job, WireError, parse_header, read_token, runtime_for, suffixes
from edgeslim.core.errors import UsageError


def header(**over) -> bytes:
    d = {"version": 1, "runtime": "onnxruntime", "threads": 2, "warmup": 3, "runs": 5, "seed": 0,
         "input_shape": [1, 3, 8, 8], "memory": False, "files": [{"suffix": ".onnx", "bytes": 10}], **over}
    return (json.dumps(d) + "\n").encode()


def test_a_job_round_trips_through_its_header():
    job = Job("openvino", 1, 0, 7, (2, 3, 4, 4), ((".xml", 5), (".bin", 9)), seed=3, memory=True)
    line = job.header()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_header(line) == job and job.body_bytes == 14


@pytest.mark.parametrize("over, says", [
    ({"version": 2}, "version 2"),
    ({"runtime": 3}, "'runtime'"),
    ({"threads": 0}, "'threads' must be an integer"),
    ({"threads": True}, "'threads'"),
    ({"runs": 0}, "'runs'"),
    ({"warmup": -1}, "'warmup'"),
    ({"input_shape": [1, 0, 8]}, "'input_shape'"),
    ({"input_shape": "1,3,8,8"}, "'input_shape'"),
    ({"input_shape": [MAX_INPUT_ELEMENTS, 2]}, "elements"),
    ({"files": []}, "'files'"),
    ({"files": [{"suffix": ".onnx", "bytes": -1}]}, "'files'"),
    ({"files": [{"suffix": ".onnx"}]}, "'files'"),
    ({"memory": "yes"}, "'memory'"),
])
def test_a_bad_header_says_what_is_wrong(over, says):
    with pytest.raises(WireError, match=says):
        parse_header(header(**over))


def test_a_header_that_is_no_json_object_is_refused():
    for line in (b"[1, 2]\n", b"\xff\xfe\n", b"{\n"):
        with pytest.raises(WireError):
            parse_header(line)


def test_each_runtime_sends_the_files_its_artifact_has():
    assert suffixes("onnxruntime") == [".onnx"] and suffixes("openvino") == [".xml", ".bin"]
    assert runtime_for("a/m.xml") == "openvino" and runtime_for("m.onnx") == "onnxruntime"
    assert runtime_for("m.pte") == "executorch" and runtime_for("m.pt") is None


def test_token_files(tmp_path):
    f = tmp_path / "token"
    with pytest.raises(UsageError, match="does not exist"):
        read_token(f)
    f.write_text("  \n")
    with pytest.raises(UsageError, match="is empty"):
        read_token(f)
    f.write_text("two words\n")
    with pytest.raises(UsageError, match="one token"):
        read_token(f)
    f.write_text("abcdefghijklmnopqrstuvwxyz\n")
    os.chmod(f, 0o644)
    assert read_token(f) == "abcdefghijklmnopqrstuvwxyz"  # a client reads it as it is
    with pytest.raises(UsageError, match="open to group or others") as e:
        read_token(f, private=True)  # the agent's own file must be private
    assert "chmod 600" in e.value.hint
    os.chmod(f, 0o600)
    assert read_token(f, private=True) == "abcdefghijklmnopqrstuvwxyz"
    f.write_text("short\n")
    with pytest.raises(UsageError, match="at least 16"):
        read_token(f, private=True)
