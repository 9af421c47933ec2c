"""The device agent: time artifacts on another machine (the deployment target) over HTTP.

On the device (any machine with Python, edgeslim and the runtime):

    edgeslim agent --port 8765 --token-file token.txt        # prints: agent listening on http://HOST:PORT

On the host, ``bench``, ``profile`` and ``auto`` take ``--agent http://HOST:8765 --token-file token.txt``
and send each artifact there instead of timing it here; in Python:

    agent = edgeslim.agent.Agent("http://HOST:8765", token)
    agent.time("model.onnx", (1, 1, 28, 28), threads=1, warmup=5, runs=50)   # {"times_ms": [...], ...}

The agent runs nothing from a request but the runtime loading the artifact (no custom-op libraries).
The wire format is in wire.py, the server in server.py, the client in client.py.
"""
from __future__ import annotations

from .client import Agent
from .wire import parse_url, read_token

__all__ = ["Agent", "parse_url", "read_token"]
