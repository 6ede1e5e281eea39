"""A real uvicorn server on a free loopback port, in a thread (or `resnetlab serve` in a process of its own), and a
small HTTP client for it.

The client is http.client: conftest replaces urllib's urlopen with one that refuses, and loopback is all these
tests talk to.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from resnetlab.serve import bind


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LiveServer:
    host: str
    port: int
    timeout: float = 30  # seconds a request may wait for its answer

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, chunked: bool = False
    ) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body: two writes
            connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            response = connection.getresponse()
            return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
        finally:
            connection.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_image(self, data: bytes, path: str = "/predict", content_type: str = "image/png") -> Reply:
        return self.request("POST", path, data, {"Content-Type": content_type})

    def post_form(self, fields: dict[str, bytes], path: str = "/predict") -> Reply:
        body, content_type = multipart(fields)
        return self.request("POST", path, body, {"Content-Type": content_type})


def multipart(fields: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part per field."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(server: LiveServer, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if server.get("/health").status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {server.url}health within {seconds} s")
        time.sleep(0.1)


@contextlib.contextmanager
def running(app) -> Iterator[LiveServer]:
    """Serve `app` on 127.0.0.1 at a free port until the block ends."""
    sock = bind("127.0.0.1", 0)  # the socket `resnetlab serve` listens on
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    live = LiveServer("127.0.0.1", sock.getsockname()[1])
    try:
        wait_for_health(live, 20)
        yield live
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serving(
    checkpoint: str | Path, *options: str, timeout: float = 30
) -> Iterator[tuple[LiveServer, subprocess.Popen]]:
    """`resnetlab serve CHECKPOINT OPTIONS` in a process of its own (whose memory /proc/PID/status tells) on a free
    loopback port, until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "resnetlab", "serve", str(checkpoint), "--port", str(port), *options]
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        live = LiveServer("127.0.0.1", port, timeout)
        try:
            try:
                wait_for_health(live, 60)
            except TimeoutError:
                output.seek(0)
                raise TimeoutError(f"resnetlab serve did not answer within 60 s; it wrote: {output.read()}") from None
            yield live, process
        finally:
            process.terminate()
            process.wait(20)
