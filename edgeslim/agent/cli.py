"""`edgeslim agent` (serve timings on a device) and the --agent / --token-file options of bench,
profile and auto (time there instead of here).

    edgeslim agent [--host 127.0.0.1] [--port 0] --token-file FILE [--max-mb 512]
    edgeslim bench a.onnx b.onnx --agent http://HOST:PORT --token-file FILE
"""
from __future__ import annotations

import argparse
import sys

from ..cli_common import int_range, positive_float


def register(sub) -> None:
    p = sub.add_parser("agent", help="serve timing requests on a device: artifacts in over HTTP, latencies out",
                       description="Run on the device (any machine with Python, edgeslim and the runtime). It "
                                   "accepts an artifact from `bench`, `profile` or `auto --agent http://HOST:PORT`, "
                                   "times it in the named runtime, one timing at a time, and answers the figures. "
                                   "Requests must carry the token in --token-file; the first line on stdout is the "
                                   "address.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface: HTTP is unencrypted, "
                        "use a trusted network or an SSH tunnel)")
    p.add_argument("--port", type=int_range(0, 65535), default=0, help="port; 0 picks a free one (default 0)")
    p.add_argument("--token-file", required=True, metavar="FILE",
                   help="file holding the token clients must send (16+ characters, mode 600)")
    p.add_argument("--max-mb", type=positive_float, default=512.0,
                   help="largest request accepted, in MB of 10^6 bytes (default 512)")
    p.set_defaults(func=run_agent)


def _log(msg: str) -> None:
    print(f"agent: {msg}", file=sys.stderr, flush=True)


def run_agent(args) -> int:
    import signal

    from ..core.errors import EdgeslimError
    from .server import AgentServer
    from .wire import read_token

    token = read_token(args.token_file, private=True)
    try:
        server = AgentServer(args.host, args.port, token, max_bytes=int(args.max_mb * 1e6), log=_log)
    except OSError as e:
        raise EdgeslimError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}",
                            hint="choose another --port (0 picks a free one) or --host") from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)  # a clean stop: the private folder goes with it
    except ValueError:  # not the main thread
        pass
    print(f"agent listening on {server.url}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _log("the token and the artifacts travel unencrypted (plain HTTP): use a trusted network or an SSH tunnel")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        _log("stopped")
    finally:
        server.server_close()
    return 0


def agent_url(text: str) -> str:
    """An argparse type: an agent address http://HOST:PORT (normalized)."""
    from ..core.errors import UsageError
    from .wire import parse_url

    try:
        return parse_url(text)[0]
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def add_agent_args(p: argparse.ArgumentParser) -> None:
    """--agent URL and --token-file FILE: time on an `edgeslim agent` instead of here."""
    g = p.add_argument_group("device agent")
    g.add_argument("--agent", type=agent_url, metavar="http://HOST:PORT",
                   help="time every artifact on this `edgeslim agent` (the device) instead of here")
    g.add_argument("--token-file", metavar="FILE", help="file holding the agent's token (with --agent)")


def check_agent_args(args) -> tuple[str, str] | None:
    """(URL, token file) when --agent is given, None when not; the one without the other is a UsageError."""
    from ..core.errors import UsageError

    url, token_file = getattr(args, "agent", None), getattr(args, "token_file", None)
    if url is None:
        if token_file:
            raise UsageError("--token-file is given without --agent", hint="add --agent http://HOST:PORT, or drop it")
        return None
    if not token_file:
        raise UsageError("--agent needs --token-file, the file holding the agent's token",
                         hint="give the same token file the agent was started with (a copy on this machine)")
    return url, token_file


def agent_from_args(args):
    """The Agent that --agent / --token-file name (its token read), or None without --agent."""
    from .client import Agent

    given = check_agent_args(args)
    return None if given is None else Agent.from_token_file(*given)
