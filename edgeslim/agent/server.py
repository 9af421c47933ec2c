"""The agent's HTTP server: accept an artifact, time it in the named runtime, answer the figures.

Safety: a request must carry the token (compared in constant time) before anything else is looked
at; its size is checked from Content-Length before the body is read; the files get names the agent
chooses, in a private folder deleted after the timing; the only thing a request makes the agent run
is the runtime loading the artifact (ONNX files with external data are refused: they would name
other files on the device). Timings run one at a time under a lock, so they never overlap; uploads
may proceed meanwhile. Every refusal is a JSON {"error": ...} with its status, and the server keeps
serving.
"""
from __future__ import annotations

import hmac
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .wire import CONTENT_TYPE, MAX_HEADER, WireError, file_runtimes, parse_header, suffixes

ROUTES = {"/time": "POST", "/info": "GET"}
PENDING = 4  # requests admitted at once (uploading, waiting for the lock or timing); more get 503


class Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def one_line(e: BaseException, folder: Path | None = None) -> str:
    """The first line of an error, the agent's private folder left out of it."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text.replace(f"{folder}/", "").replace(str(folder), ".") if folder else text


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, token: str, *, max_bytes: int, log=None):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.token = token.encode("ascii")
        self.max_bytes = int(max_bytes)
        self.lock = threading.Lock()  # one timing at a time
        self.slots = threading.BoundedSemaphore(PENDING)
        self.log = log or (lambda msg: None)
        self._runtimes: dict[str, tuple[str | None, str | None]] = {}
        self._runtimes_lock = threading.Lock()
        super().__init__((host, port), _Handler)
        _remove_stale()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"edgeslim-agent-{os.getpid()}-"))  # mode 0700

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def runtime(self, name: str) -> tuple[str | None, str | None]:
        """(version, None) when runtime ``name`` loads here, (None, why not) when its package is missing."""
        with self._runtimes_lock:
            if name not in self._runtimes:
                from .. import runtimes

                try:
                    self._runtimes[name] = (runtimes.get(name).version(), None)
                except Exception as e:  # noqa: BLE001 - an optional runtime's package missing or broken
                    self._runtimes[name] = (None, one_line(e))
            return self._runtimes[name]

    def info(self) -> dict:
        from .. import __version__
        from ..core.report import machine_info

        found = {n: self.runtime(n) for n in file_runtimes()}
        return {"agent": "edgeslim", "edgeslim_version": __version__, "max_bytes": self.max_bytes,
                "runtimes": {n: v for n, (v, _) in found.items() if v},
                "unavailable": {n: why for n, (v, why) in found.items() if not v}, "machine": machine_info()}


def _remove_stale() -> None:
    """Delete the private folders of agents that were killed (SIGKILL, out of memory) before they could."""
    for d in Path(tempfile.gettempdir()).glob("edgeslim-agent-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            if d.stat().st_uid != os.getuid():
                continue
            os.kill(pid, 0)  # that agent is still running: its folder stays
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, OSError):  # not one of ours, or not ours to judge
            continue


def _external_data(path: Path) -> bool:
    """Whether an ONNX file names external data files (anywhere, subgraphs included)."""
    import onnx

    def tensors(graph):
        yield from graph.initializer
        yield from (s.values for s in graph.sparse_initializer)
        for node in graph.node:
            for a in node.attribute:
                yield from ([a.t] if a.HasField("t") else []) + list(a.tensors)
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from tensors(g)

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - no ONNX at all: the runtime refuses it with its own reason
        return False
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors(model.graph))


def run_job(job, paths: list[Path]) -> dict:
    """Load the artifact in the job's runtime, time it, (measure its peak memory), free it."""
    import numpy as np

    from .. import runtimes
    from ..core.errors import EdgeslimError
    from ..core.report import machine_info

    folder = paths[0].parent
    rt = runtimes.get(job.runtime)
    if paths[0].suffix == ".onnx" and _external_data(paths[0]):
        raise Refusal(422, "the ONNX file names external data files; send a self-contained .onnx")
    x = np.random.default_rng(job.seed).standard_normal(job.input_shape, dtype=np.float32)
    t0 = time.perf_counter()
    try:
        runner = rt.load(paths[0], threads=job.threads)
    except Exception as e:  # noqa: BLE001 - each runtime raises its own types for a file it cannot load
        raise Refusal(422, f"the artifact does not load in {rt.version()}: {one_line(e, folder)}") from None
    load_ms = (time.perf_counter() - t0) * 1e3
    try:
        times = rt.time(runner, x, warmup=job.warmup, runs=job.runs)
    except Exception as e:  # noqa: BLE001 - a wrong input shape and the like, reported, not fatal
        raise Refusal(422, f"the artifact does not run on input {list(job.input_shape)} in {rt.version()}: "
                           f"{one_line(e, folder)}") from None
    finally:
        del runner  # the session and its threads go before anything else runs
    out = {"times_ms": times, "runtime": rt.version(), "threads": job.threads, "input_shape": list(job.input_shape),
           "load_ms": round(load_ms, 3), "host": machine_info(job.threads, runtime=rt.version())}
    if job.memory:
        from ..measure.memory import peak_memory

        try:
            mem = peak_memory(paths[0], job.input_shape, runtime=job.runtime, threads=job.threads)
        except EdgeslimError as e:
            raise Refusal(422, f"measuring the peak memory failed: {one_line(e, folder)}") from None
        out.update(peak_memory_bytes=mem["peak_memory_bytes"], memory_method=mem["method"])
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a read or write may stall: a client that stops mid-upload frees its thread
    server: AgentServer

    def parse_request(self) -> bool:
        self._admitted, self._unread, self._slot = False, 0, False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        """Refuse before the client sends the body (wrong token, too large, busy); else 100 Continue."""
        try:
            self._admit()
        except Refusal as r:
            self._refuse(r)
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._serve(lambda: self.server.info())

    def do_POST(self) -> None:
        self._serve(self._time)

    def _serve(self, answer) -> None:
        try:
            if not self._admitted:
                self._admit()
            self._reply(200, answer())
        except Refusal as r:
            self._refuse(r)
        except (OSError, TimeoutError) as e:  # the client went away or stalled: nobody to answer
            self.close_connection = True
            self.server.log(f"{self.command} {self.path}: connection lost ({one_line(e)})")
        except Exception as e:  # noqa: BLE001 - a bug answers 500 and the agent keeps serving
            self._refuse(Refusal(500, f"internal error in the agent: {type(e).__name__}: {one_line(e)}"))
        finally:
            if self._slot:
                self.server.slots.release()
                self._slot = False

    def _admit(self) -> None:
        """Route, token, then size: all before a byte of the body is read."""
        route = urlsplit(self.path).path
        if route not in ROUTES:
            raise Refusal(404, f"no endpoint {route}; the agent has POST /time and GET /info")
        if ROUTES[route] != self.command:
            raise Refusal(405, f"{route} takes {ROUTES[route]}, not {self.command}")
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1", "replace"),
                                                                 self.server.token):
            raise Refusal(401, "missing or wrong token (send Authorization: Bearer TOKEN, the agent's --token-file)")
        if self.command == "POST":
            self._check_length()
            if not self.server.slots.acquire(blocking=False):
                raise Refusal(503, f"busy: {PENDING} requests are already in progress; retry later")
            self._slot = True
        self._admitted = True

    def _check_length(self) -> None:
        text = self.headers.get("Content-Length")
        if text is None:
            raise Refusal(411, "a request to /time needs a Content-Length")
        try:
            n = int(text)
            if n < 0:
                raise ValueError
        except ValueError:
            raise Refusal(400, f"Content-Length {text!r} is not a byte count") from None
        self._unread = n
        if n > self.server.max_bytes:
            raise Refusal(413, f"the request is {n / 1e6:.2f} MB; this agent takes at most "
                               f"{self.server.max_bytes / 1e6:g} MB (its --max-mb)")

    def _time(self) -> dict:
        if self.headers.get_content_type() != CONTENT_TYPE:
            raise Refusal(400, f"a request to /time must have Content-Type {CONTENT_TYPE}")
        line = self.rfile.readline(min(MAX_HEADER + 1, self._unread))  # never waits past the body
        self._unread -= len(line)
        if not line.endswith(b"\n"):
            raise Refusal(400, f"the body must start with one JSON header line of at most {MAX_HEADER} bytes")
        try:
            job = parse_header(line)
        except WireError as e:
            raise Refusal(400, str(e)) from None
        self._check_runtime(job)
        if job.body_bytes != self._unread:
            raise Refusal(400, f"the header lists {job.body_bytes} bytes of files but {self._unread} follow it")
        folder = Path(tempfile.mkdtemp(dir=self.server.workdir))
        try:
            paths = [folder / f"artifact{s}" for s, _ in job.files]
            for path, (_, n) in zip(paths, job.files):
                self._receive(path, n)
            t0 = time.perf_counter()
            with self.server.lock:
                wait_ms = (time.perf_counter() - t0) * 1e3
                out = run_job(job, paths)
            self.server.log(f"timed {job.runtime} x{job.runs} ({job.threads} threads): "
                            f"median {sorted(out['times_ms'])[len(out['times_ms']) // 2]:.3f} ms")
            return {**out, "wait_ms": round(wait_ms, 3)}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _check_runtime(self, job) -> None:
        names = file_runtimes()
        if job.runtime not in names:
            raise Refusal(400, f"unknown runtime {job.runtime!r}; the agent times: {', '.join(names)}")
        version, why = self.server.runtime(job.runtime)
        if version is None:
            raise Refusal(501, f"runtime {job.runtime} is not installed on this agent: {why}")
        want, got = suffixes(job.runtime), [s for s, _ in job.files]
        if got != want:
            raise Refusal(400, f"a {job.runtime} artifact is sent as the files {', '.join(want)} in that order, "
                               f"not {', '.join(got) or 'none'}")

    def _receive(self, path: Path, n: int) -> None:
        with open(path, "wb") as f:
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 20))
                if not chunk:
                    raise OSError("the body ended before the lengths in its header")
                f.write(chunk)
                n -= len(chunk)
                self._unread -= len(chunk)

    def _reply(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.send_header("Connection", "close")  # one request per connection
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _refuse(self, r: Refusal) -> None:
        self.server.log(f"{self.command} {self.path}: refused {r.status}: {r.message}")
        try:
            self._reply(r.status, {"error": r.message})
            self._linger()
        except OSError:
            self.close_connection = True

    def _linger(self, seconds: float = 2.0) -> None:
        """Discard what the client still sends (briefly), so it reads the refusal instead of a reset."""
        if self._unread <= 0:
            return
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(0.5)
        end = time.monotonic() + seconds
        try:
            while self._unread > 0 and time.monotonic() < end:
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                self._unread -= len(chunk)
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None) -> None:
        """http.server's own refusals (bad request line, unknown method, oversized headers) as JSON too."""
        self.close_connection = True
        try:
            self._reply(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the server logs one line per timing or refusal itself
