"""Immutable blobs (snapshots, quarantine evidence, reports, bentos to deploy) in an object store, through fsspec.

One interface, two backends, chosen by a URL (``STOCKOPS_BLOB_URL``):

- a local folder (``/path`` or ``file:///path``; embedded, the default: the home itself, so a blob's key is its
  path under the home);
- an S3 bucket (``s3://bucket/prefix``; distributed): ``s3fs`` against ``AWS_ENDPOINT_URL`` with the
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` every S3 client reads (the project's own server is
  ``stockops.launch.objectstore``).

A put is atomic: a local blob is written to a temporary file and renamed, an S3 object is one PUT, which the store
shows whole or not at all. A put that dies midway (the writer, or the object store, killed) leaves no blob, or on
stores that write in place a partial one that no record names yet: writers read a blob back and check it against
its digest before any record names it (:meth:`BlobStore.put_verified`), and readers check it again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec

from stockops.storage.files import atomic_write_bytes


class BlobStore:
    """Blobs under ``url``, addressed by ``/``-separated keys (``data/GOOG/snapshots/<sha256>.parquet``)."""

    def __init__(self, url: str | Path, cache_dir: Path | None = None):
        text = str(url)
        parsed = urlparse(text)
        self.scheme = parsed.scheme if parsed.scheme not in ("", "file") else "file"
        if self.scheme == "file":
            self.root = os.path.abspath(parsed.path if parsed.scheme == "file" else text)
            self.fs: Any = fsspec.filesystem("file")
        elif self.scheme == "s3":
            self.root = (parsed.netloc + parsed.path).rstrip("/")
            self.fs = _s3_filesystem()
        else:
            raise ValueError(f"STOCKOPS_BLOB_URL={text!r}: use a folder (file:///path) or an S3 bucket "
                             "(s3://bucket/prefix)")
        self.url = text
        self.cache_dir = cache_dir

    def __repr__(self) -> str:
        return f"BlobStore({self.url})"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"blob key {key!r}: a relative path without '..'")
        return f"{self.root}/{key}"

    def local_path(self, key: str) -> Path:
        """The file of a local blob (only for the local backend)."""
        if not self.is_local:
            raise ValueError(f"{self!r} is not a local folder")
        return Path(self._path(key))

    # ---- writing ------------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there, atomically."""
        if self.is_local:
            atomic_write_bytes(Path(self._path(key)), data)
        else:
            self.fs.pipe_file(self._path(key), data)

    def put_verified(self, key: str, data: bytes) -> str:
        """Store ``data`` unless ``key`` already holds exactly it, read it back and check it; returns its SHA-256.

        Only after this returns may a record name the blob: a put cut off by a dying store is not mistaken for one
        that landed."""
        digest = hashlib.sha256(data).hexdigest()
        if self.sha256(key) == digest:
            return digest
        self.put(key, data)
        landed = self.sha256(key)
        if landed != digest:
            raise OSError(f"blob {key} in {self!r} does not hold what was written (SHA-256 {landed} != {digest})")
        return digest

    def remove_partial(self, folder: str) -> None:
        """Drop what a killed local put left half-written in ``folder`` (its temporary files). Only a writer that
        holds the lock of every put there may call this. An S3 put leaves nothing to drop."""
        if self.is_local:
            for leftover in Path(self._path(folder)).glob(".*.tmp"):
                leftover.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    # ---- reading ------------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """The blob's bytes; ``FileNotFoundError`` naming it when there is none."""
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            raise FileNotFoundError(f"no blob {key} in {self!r}") from None

    def sha256(self, key: str) -> str | None:
        try:
            return hashlib.sha256(self.get(key)).hexdigest()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in ``/``, or empty)."""
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(path[len(root):] if path.startswith(root) else path for path in found)

    def fetch(self, key: str, digest: str | None = None) -> Path:
        """A local file holding the blob: the blob itself when local, else a copy in the cache folder (kept by
        ``digest`` when given: content-addressed blobs are downloaded once)."""
        if self.is_local:
            return self.local_path(key)
        if self.cache_dir is None:
            raise ValueError(f"{self!r} needs a cache folder to fetch {key}")
        name = (digest or hashlib.sha256(key.encode()).hexdigest()) + Path(key).suffix
        target = self.cache_dir / name
        if digest is None or not target.exists():
            atomic_write_bytes(target, self.get(key))
        return target


def _s3_filesystem() -> Any:
    """An s3fs filesystem on ``AWS_ENDPOINT_URL`` (unset: AWS itself), uncached listings: another host's put must
    show at once."""
    import s3fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {},
                             use_listings_cache=False, skip_instance_cache=True,
                             config_kwargs={"retries": {"max_attempts": 3, "mode": "standard"},
                                            "connect_timeout": 5, "read_timeout": 30})
