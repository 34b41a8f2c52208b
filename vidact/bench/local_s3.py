"""A local S3 server that counts what it serves, for measurements of a shard set read from object
storage: moto's S3 (``moto[server]``, the test extra) on 127.0.0.1 in a child process, behind a
WSGI layer that counts requests and response bytes. Every client started in this process after
`LocalS3` starts (DALI's reader, s3fs, subprocesses) reaches it through the standard AWS variables.

    with LocalS3() as s3:
        url = s3.upload_set(folder, "bench/set")     # s3://vidact-bench/bench/set
        before = s3.served()
        ...                                          # read url
        served = s3.served() - before                # Served(requests, bytes)
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import astuple, dataclass, fields

from vidact import storage

BUCKET = "vidact-bench"
COUNTS_PATH = "/_vidact/served"


@dataclass(frozen=True)
class Served:
    requests: int
    bytes: int
    index_requests: int = 0  # of `requests`, those for a DALI index (``*.idx``)
    head_requests: int = 0  # of `requests`, HEADs (what opening an object costs DALI's reader)

    def __sub__(self, other: Served) -> Served:
        return Served(*(a - b for a, b in zip(astuple(self), astuple(other))))


def counting(app):
    """`app` with every request and response byte counted (and of them, DALI indexes and HEADs);
    ``GET /_vidact/served`` answers the counts as JSON (and is not counted)."""
    counts, lock = {f.name: 0 for f in fields(Served)}, threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with lock:
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with lock:
            counts["requests"] += 1
            counts["index_requests"] += environ.get("PATH_INFO", "").endswith(".idx")
            counts["head_requests"] += environ.get("REQUEST_METHOD") == "HEAD"
        return _counted(app(environ, start_response), counts, lock)

    return wrapped


def _counted(chunks, counts, lock):
    try:
        for chunk in chunks:
            with lock:
                counts["bytes"] += len(chunk)
            yield chunk
    finally:
        getattr(chunks, "close", lambda: None)()


def serve(port: int) -> None:
    """The server itself (the child process)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = counting(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler).serve_forever()


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVER: dict[str, subprocess.Popen] = {}  # endpoint -> this process's server


def _server(start_seconds: float) -> str:
    """The endpoint of this process's server, started (and killed at exit) the first time."""
    for endpoint, process in _SERVER.items():
        if process.poll() is None:
            return endpoint
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"a local S3 server needs moto[server] and s3fs: pip install 'vidact[test]' ({e})") from e
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "vidact.bench.local_s3", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, process)
    deadline = time.monotonic() + start_seconds
    while True:
        try:
            _counts(endpoint)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                raise RuntimeError(f"the local S3 server on {endpoint} did not start") from None
            time.sleep(0.1)
    _SERVER.clear()
    _SERVER[endpoint] = process
    return endpoint


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=30)


def _counts(endpoint: str) -> Served:
    with urllib.request.urlopen(endpoint + COUNTS_PATH, timeout=5) as r:
        return Served(**json.loads(r.read()))


def _forget_clients() -> None:
    """fsspec keeps one S3 filesystem per set of arguments, with the endpoint it was made with:
    forgotten whenever the endpoint in the environment changes."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


class LocalS3:
    """The AWS variables pointing at this process's counting server for the life of a ``with``
    block (restored after). The server is started by the first block and lives as long as this
    process: DALI's S3 client keeps the endpoint it first saw, so every block of a process (a
    test session's, a benchmark's) talks to the same one."""

    def __init__(self, start_seconds: float = 30.0):
        self.start_seconds = start_seconds
        self.endpoint = ""
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> LocalS3:
        self.endpoint = _server(self.start_seconds)
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(k, None)
        os.environ.update(env)
        _forget_clients()
        return self

    def __exit__(self, *exc) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_clients()

    def served(self) -> Served:
        """Requests and bytes served so far (since the server started)."""
        return _counts(self.endpoint)

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint})

    def upload_set(self, folder: str, prefix: str) -> str:
        """Copies every file of the shard set `folder` to ``s3://vidact-bench/PREFIX`` (the
        manifest last, as make_shards writes it); returns that URL."""
        fs = self.filesystem()
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        url = f"s3://{BUCKET}/{prefix.strip('/')}"
        names = sorted(os.listdir(folder), key=lambda n: n == "manifest.json")
        for name in names:
            storage.upload(os.path.join(folder, name), f"{url}/{name}")
        return url


if __name__ == "__main__":
    serve(int(sys.argv[1]))
