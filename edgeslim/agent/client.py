"""The host's side of the device agent: send an artifact, get its timings back.

Every failure is one EdgeslimError naming the agent's URL and what happened: nothing listening,
the agent dying mid-request, no answer in time, or the agent's own refusal (its status and message).
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import time
from pathlib import Path
from typing import Any

from ..core.errors import EdgeslimError, UsageError
from ..core.shapes import batched
from .wire import CONTENT_TYPE, Job, file_runtimes, parse_url, read_token, runtime_for, suffixes

CONTINUE_WAIT_S = 10.0  # how long the client waits for 100 Continue before it sends the body anyway

_HINTS = {
    401: "give --token-file the file holding the agent's token (the one its --token-file reads)",
    413: "raise the agent's limit (edgeslim agent --max-mb) or send a smaller artifact",
    501: "install that runtime on the device, or time with one the agent has (GET /info lists them)",
    503: "the agent is busy with other requests; retry when they are done",
}


class Agent:
    """An `edgeslim agent` at ``url`` (http://HOST:PORT) that accepts ``token``."""

    def __init__(self, url: str, token: str, *, timeout: float = 600.0):
        self.url, self.host, self.port = parse_url(url)
        self._token = token
        self.timeout = float(timeout)

    @classmethod
    def from_token_file(cls, url: str, token_file, **kw) -> "Agent":
        return cls(url, read_token(token_file), **kw)

    def __repr__(self) -> str:  # never the token
        return f"Agent({self.url!r})"

    def info(self) -> dict:
        """The agent's runtimes with their versions, its size limit and its machine."""
        return self._request("GET", "/info", what="its info")

    def time(self, path, input_shape, *, runtime: str | None = None, threads: int = 2, warmup: int = 10,
             runs: int = 50, memory: bool = False, seed: int = 0) -> dict[str, Any]:
        """Time the artifact at ``path`` (with its companion files) on the agent, in ``runtime`` (by
        default the one its suffix names). Returns the agent's answer ({"times_ms": [...], "runtime",
        "threads", "host", "load_ms", "wait_ms", with ``memory`` "peak_memory_bytes"}) plus
        "round_trip_ms", this call's wall time."""
        from .. import runtimes

        path = Path(path)
        runtime = runtime or runtime_for(path)
        if runtime is None:
            raise UsageError(f"cannot time {path} on the agent: no runtime takes {path.suffix or 'suffixless'} files")
        files = runtimes.artifact_files(path)
        if runtime in file_runtimes() and [f.suffix for f in files] != suffixes(runtime):
            raise UsageError(f"cannot time {path} in {runtime} on the agent: its artifacts are "
                             f"{' + '.join(suffixes(runtime))} files")
        for f in files:
            if not f.is_file():
                raise UsageError(f"cannot time {path} on the agent: {f} does not exist")
        job = Job(runtime=runtime, threads=int(threads), warmup=int(warmup), runs=int(runs), seed=int(seed),
                  input_shape=batched(input_shape), memory=bool(memory),
                  files=tuple((f.suffix, f.stat().st_size) for f in files))
        t0 = time.perf_counter()
        out = self._request("POST", "/time", job=job, files=files, what=f"to time {path.name}")
        if not isinstance(out.get("times_ms"), list) or not out["times_ms"]:
            raise EdgeslimError(f"the agent at {self.url} answered no timings for {path.name}")
        out["round_trip_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    def _request(self, method: str, route: str, *, what: str, job: Job | None = None, files=()) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout, blocksize=1 << 16)
        try:
            status, reason, body = self._exchange(conn, method, route, job, files)
        except ConnectionRefusedError:
            raise EdgeslimError(f"cannot reach the agent at {self.url}: connection refused",
                                hint="start it on the device: edgeslim agent --port PORT --token-file FILE") from None
        except socket.gaierror as e:
            raise EdgeslimError(f"cannot reach the agent at {self.url}: unknown host {self.host} "
                                f"({e.strerror})") from None
        except TimeoutError:
            raise EdgeslimError(f"the agent at {self.url} did not answer within {self.timeout:g}s") from None
        except (ConnectionError, http.client.IncompleteRead):  # RemoteDisconnected is a ConnectionError
            raise EdgeslimError(f"the agent at {self.url} dropped the connection during the request {what} "
                                f"(it died or was stopped)") from None
        except http.client.HTTPException as e:
            raise EdgeslimError(f"the agent at {self.url} answered broken HTTP: {type(e).__name__}") from None
        except OSError as e:
            raise EdgeslimError(f"cannot reach the agent at {self.url}: {e.strerror or e}") from None
        finally:
            conn.close()
        try:
            obj = json.loads(body)
            if not isinstance(obj, dict):
                raise ValueError
        except ValueError:
            raise EdgeslimError(f"{self.url} answered {status} {reason} with no edgeslim agent JSON "
                                f"(is an edgeslim agent listening there?)") from None
        if status != 200:
            raise EdgeslimError(f"the agent at {self.url} refused the request {what} ({status} {reason}): "
                                f"{obj.get('error', 'no reason given')}", hint=_HINTS.get(status))
        return obj

    def _exchange(self, conn, method, route, job, files) -> tuple[int, str, bytes]:
        conn.putrequest(method, route, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {self._token}")
        if job is not None:
            header = job.header()
            conn.putheader("Content-Type", CONTENT_TYPE)
            conn.putheader("Content-Length", str(len(header) + job.body_bytes))
            conn.putheader("Expect", "100-continue")
        conn.endheaders()
        if job is not None and _proceed(conn.sock, min(self.timeout, CONTINUE_WAIT_S)):
            try:
                conn.send(header)
                for f in files:
                    with open(f, "rb") as fh:
                        conn.send(fh)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent stopped reading: its answer (a refusal) may still be there to read
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.read()


def _proceed(sock, wait: float) -> bool:
    """After the headers: True when the agent answered 100 Continue (consumed here) or said nothing
    within ``wait`` seconds; False when its final answer (a refusal) came first."""
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        head = sock.recv(64, socket.MSG_PEEK)
        if not head:
            return False  # closed: reading the answer reports it
        if b"\r\n" not in head and len(head) < 12:
            time.sleep(0.005)
            continue
        if head.split(b" ", 2)[1:2] != [b"100"]:
            return False
        seen = b""
        while not seen.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)
            if not byte:
                return False
            seen += byte
        return True
    return True
