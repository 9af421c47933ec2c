"""What travels between the host and the device agent, and the checks both sides share.

    POST /time HTTP/1.1
    Authorization: Bearer TOKEN
    Content-Type: application/x-edgeslim-artifact
    Content-Length: L
    Expect: 100-continue                      (the client sends the body after the agent's 100 Continue)

    {"version": 1, "runtime": "openvino", "threads": 1, "warmup": 10, "runs": 50, "seed": 0,
     "input_shape": [1, 1, 28, 28], "memory": false, "files": [{"suffix": ".xml", "bytes": 1234},
     {"suffix": ".bin", "bytes": 56789}]}\\n
    <1234 bytes of the .xml><56789 bytes of the .bin>

The body is one JSON header line (at most 64 KiB) and then the artifact's files back to back, in the
order the header lists them: exactly the suffixes the runtime's artifact has (``runtimes.artifact_files``:
an OpenVINO IR is .xml + .bin, the other formats one file). The lengths add up to Content-Length. The
agent names the files itself (never from the request), in a private folder deleted after the timing.

Answers are JSON objects: 200 {"times_ms": [...], "runtime", "threads", "input_shape", "load_ms",
"wait_ms", "host": machine info, "peak_memory_bytes" and "memory_method" when asked}; a refusal is
{"error": "one line"} with 400 (malformed, unknown runtime), 401 (token), 404/405, 411, 413 (size),
422 (the artifact does not load or run), 501 (runtime not installed there), 503 (busy).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from ..core.errors import UsageError

VERSION = 1
CONTENT_TYPE = "application/x-edgeslim-artifact"
MAX_HEADER = 64 * 1024
MAX_RUNS = 100_000
MAX_THREADS = max(256, 4 * (os.cpu_count() or 1))
MAX_INPUT_ELEMENTS = 1 << 26  # 256 MB of float32: a shape that asks for more is refused, not allocated
URL_HINT = "give --agent http://HOST:PORT, the address `edgeslim agent` prints when it starts"


class WireError(ValueError):
    """A request that does not follow the format (the agent answers 400 with this message)."""


def file_runtimes() -> list[str]:
    """The runtimes whose artifacts are files: the ones an agent can time."""
    from .. import runtimes

    return [n for n in runtimes.names() if runtimes._SUFFIXES.get(n)]


def runtime_for(path) -> str | None:
    """The runtime whose artifacts have ``path``'s suffix, found without importing that runtime."""
    from .. import runtimes

    suffix = Path(path).suffix
    return next((n for n in file_runtimes() if runtimes._SUFFIXES[n] == suffix), None)


def suffixes(runtime: str) -> list[str]:
    """The file suffixes of ``runtime``'s artifact, in the order they travel (the main file first)."""
    from .. import runtimes

    return [p.suffix for p in runtimes.artifact_files(Path("artifact" + runtimes._SUFFIXES[runtime]))]


@dataclasses.dataclass(frozen=True)
class Job:
    """One timing request: what to run, how, and the lengths of the files that follow the header."""

    runtime: str
    threads: int
    warmup: int
    runs: int
    input_shape: tuple[int, ...]
    files: tuple[tuple[str, int], ...]  # (suffix, bytes) in body order
    seed: int = 0
    memory: bool = False

    def header(self) -> bytes:
        d = {"version": VERSION, "runtime": self.runtime, "threads": self.threads, "warmup": self.warmup,
             "runs": self.runs, "seed": self.seed, "input_shape": list(self.input_shape), "memory": self.memory,
             "files": [{"suffix": s, "bytes": n} for s, n in self.files]}
        return json.dumps(d, separators=(",", ":")).encode() + b"\n"

    @property
    def body_bytes(self) -> int:
        return sum(n for _, n in self.files)


def _int(d: dict, key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise WireError(f"header field {key!r} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def parse_header(line: bytes) -> Job:
    """The Job of a header line; a WireError naming the first thing wrong with it."""
    try:
        d = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WireError("the body must start with one line of JSON (the header)") from None
    if not isinstance(d, dict):
        raise WireError("the header must be a JSON object")
    if d.get("version") != VERSION:
        raise WireError(f"header version {d.get('version')!r} is not {VERSION}: update edgeslim on one side")
    if not isinstance(d.get("runtime"), str):
        raise WireError("header field 'runtime' must be a runtime name")
    shape = d.get("input_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 8
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        raise WireError(f"header field 'input_shape' must be 1 to 8 positive integers (N,C,H,W), got {shape!r}")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise WireError(f"input_shape {shape} has more than {MAX_INPUT_ELEMENTS:,} elements")
    files = d.get("files")
    if not isinstance(files, list) or not files or not all(
            isinstance(f, dict) and isinstance(f.get("suffix"), str) and isinstance(f.get("bytes"), int)
            and not isinstance(f.get("bytes"), bool) and f["bytes"] >= 0 for f in files):
        raise WireError("header field 'files' must list {\"suffix\": \".onnx\", \"bytes\": N} objects")
    if not isinstance(d.get("memory", False), bool):
        raise WireError("header field 'memory' must be true or false")
    return Job(runtime=d["runtime"], threads=_int(d, "threads", 1, MAX_THREADS), warmup=_int(d, "warmup", 0, MAX_RUNS),
               runs=_int(d, "runs", 1, MAX_RUNS), input_shape=tuple(shape), seed=_int(d, "seed", 0, 2 ** 32 - 1),
               memory=d.get("memory", False), files=tuple((f["suffix"], f["bytes"]) for f in files))


def parse_url(url: str) -> tuple[str, str, int]:
    """(normalized URL, host, port) of an agent address http://HOST:PORT; a UsageError otherwise."""
    text = str(url).strip()
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise UsageError(f"agent URL {text!r} must start with http:// (the agent speaks plain HTTP)", hint=URL_HINT)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (not parts.hostname or port is None or port < 1 or parts.path not in ("", "/") or parts.query
            or parts.fragment or parts.username or parts.password):
        raise UsageError(f"agent URL {text!r} is not of the form http://HOST:PORT", hint=URL_HINT)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", host, port


TOKEN_HINT = ("write a random secret into it, readable by you only: "
              "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE; chmod 600 FILE")


def read_token(path, *, private: bool = False) -> str:
    """The token in file ``path`` (surrounding whitespace dropped). A missing, unreadable or empty
    file is a UsageError; ``private`` (the agent's own file): also one that group or others may
    read, or a token under 16 characters."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"token file {path} does not exist", hint=TOKEN_HINT) from None
    except OSError as e:
        raise UsageError(f"cannot read token file {path}: {e.strerror or e}", hint=TOKEN_HINT) from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UsageError(f"token file {path} holds non-ASCII bytes", hint=TOKEN_HINT) from None
    if not token:
        raise UsageError(f"token file {path} is empty", hint=TOKEN_HINT)
    if not token.isprintable() or any(c.isspace() for c in token):
        raise UsageError(f"token file {path} must hold one token: printable characters, no spaces", hint=TOKEN_HINT)
    if private and os.name == "posix" and mode & 0o077:
        raise UsageError(f"token file {path} is open to group or others (mode {mode & 0o777:o})",
                         hint=f"chmod 600 {path}")
    if private and len(token) < 16:
        raise UsageError(f"the token in {path} is {len(token)} characters; the agent needs at least 16",
                         hint=TOKEN_HINT)
    return token
