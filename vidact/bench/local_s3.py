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

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from vidact import storage

BUCKET = "vidact-bench"
COUNTS_PATH = "/_vidact/served"


@dataclass(frozen=True)
class Served:
    requests: int
    bytes: int

    def __sub__(self, other: Served) -> Served:
        return Served(self.requests - other.requests, self.bytes - other.bytes)


def counting(app):
    """`app` with every request and response byte counted; ``GET /_vidact/served`` answers the
    counts as JSON (and is not counted)."""
    counts, lock = {"requests": 0, "bytes": 0}, threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with lock:
                body = json.dumps(counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        with lock:
            counts["requests"] += 1
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


class LocalS3:
    """The counting server for the life of a ``with`` block, the AWS variables pointing at it
    (restored after)."""

    def __init__(self, start_seconds: float = 30.0):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start_seconds = start_seconds
        self.process: subprocess.Popen | None = None
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> LocalS3:
        try:
            import moto  # noqa: F401
            import s3fs  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"a local S3 server needs moto[server] and s3fs: "
                               f"pip install 'vidact[test]' ({e})") from e
        self.process = subprocess.Popen([sys.executable, "-m", "vidact.bench.local_s3", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait()
            env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            self.saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                os.environ.pop(k, None)
            os.environ.update(env)
        except BaseException:
            self._stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.start_seconds
        while True:
            try:
                self.served()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the local S3 server on {self.endpoint} did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._stop()

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def served(self) -> Served:
        """Requests and bytes served so far."""
        with urllib.request.urlopen(self.endpoint + COUNTS_PATH, timeout=5) as r:
            counts = json.loads(r.read())
        return Served(counts["requests"], counts["bytes"])

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
