"""Remote shards: read shard tars and manifests from URLs, with bounded retries and optional local caching.

A shard spec may name remote shards instead of local files:

* ``https://host/shards/`` or ``s3://bucket/shards`` -- a shard *directory* URL: its ``manifest.json``
  is fetched and lists the shards (like a local shard directory);
* ``https://host/shards/shard-{000000..000099}.tar`` -- a brace pattern of shard URLs;
* ``s3://bucket/shards/*.tar`` -- a glob (for protocols whose fsspec filesystem can list);
* ``pipe:CMD`` -- webdataset's pipe URL: the standard output of the shell command is the tar.

``http(s)://`` is read through fsspec (aiohttp, installed); ``s3://`` needs ``s3fs``, ``gs://`` needs
``gcsfs``; any other fsspec protocol works when its package is installed. A shard is fetched whole (a
few tens of MB) before it is parsed, so a retried download never yields a record twice. Transient
failures (connection errors, HTTP 5xx, a short read) are retried a bounded number of times with
exponential back-off; a missing object (HTTP 404) fails at once with an error naming the URL.

With ``cache_dir`` every fetched shard is also written (atomically) to that directory and read from there
next time, e.g. on node-local disk for multi-epoch runs over object storage.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

#: Protocols whose fsspec implementation lives in a separate package.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


class RemoteNotFoundError(FileNotFoundError):
    """The URL does not exist (HTTP 404, no such object). Not retried."""


class RemoteReadError(OSError):
    """The URL could not be read after the allowed retries."""


def is_remote(spec: str) -> bool:
    """True for URLs (``scheme://...``) and webdataset ``pipe:`` commands."""
    return "://" in spec or spec.startswith("pipe:")


def protocol(url: str) -> str:
    """The scheme of a URL (``pipe`` for pipe commands)."""
    return "pipe" if url.startswith("pipe:") else url.split("://", 1)[0].lower()


def url_parent(url: str) -> str:
    """The 'directory' of a shard URL (everything before the last ``/``)."""
    return url.rsplit("/", 1)[0]


def url_name(url: str) -> str:
    """The file name of a shard URL (query strings removed)."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    proto = protocol(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        pkg = _PACKAGES.get(proto, f"the fsspec implementation of {proto}://")
        raise ImportError(f"reading {url} needs {pkg}: pip install {pkg} ({exc})") from exc
    except ValueError as exc:  # unknown protocol
        raise ValueError(f"cannot read {url}: {exc}") from exc


def _read_once(url: str, timeout: float) -> bytes:
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        stream = gopen(url, "rb")
        try:
            data = stream.read()
        finally:
            stream.close()  # raises IOError naming the command when it exited non-zero
        return data
    fs, path = _filesystem(url)
    if protocol(url) in ("http", "https"):
        return fs.cat_file(path, timeout=timeout)  # fsspec's own limit on the whole call (seconds)
    return fs.cat_file(path)


def fetch_bytes(
    url: str,
    *,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 300.0,
    expected_size: int | None = None,
) -> bytes:
    """The whole content of ``url``, retrying transient failures.

    Args:
        url: ``http(s)://``, ``s3://``, ``gs://``, any fsspec URL, or ``pipe:CMD``.
        retries: Retries after the first attempt (``0`` = one attempt).
        backoff: Seconds before the first retry; doubled at every further retry.
        timeout: Seconds allowed for one HTTP download.
        expected_size: Bytes the object must have (from the manifest); a short read is retried.

    Raises:
        RemoteNotFoundError: the object does not exist (not retried).
        RemoteReadError: every attempt failed; names the URL, the attempts and the last error.
        ImportError: the protocol's fsspec package is missing (names it).

    """
    attempts = max(int(retries), 0) + 1
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            data = _read_once(url, timeout)
            if expected_size is not None and len(data) != expected_size:
                raise RemoteReadError(f"short read: {len(data)} bytes, the manifest says {expected_size}")
            return data
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise RemoteNotFoundError(f"{url} does not exist (HTTP 404 / no such object)") from exc
        except (ImportError, ValueError, PermissionError):
            raise
        except Exception as exc:
            last = exc
            if attempt + 1 < attempts:
                wait = backoff * 2**attempt
                log.warning(
                    "reading %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt + 1, retries, wait
                )
                time.sleep(wait)
    raise RemoteReadError(f"cannot read {url} after {attempts} attempt(s): {last}") from last


def cache_path(url: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Where ``url`` is cached: ``<cache_dir>/<hash of the URL>_<file name>``."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    name = url_name(url) if not url.startswith("pipe:") else "pipe.tar"
    return Path(cache_dir) / f"{digest}_{name}"


def open_remote(
    url: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    expected_size: int | None = None,
) -> BinaryIO:
    """A readable binary stream of a remote shard, fetched whole (or from the cache).

    Raises:
        RemoteNotFoundError: the URL does not exist.
        RemoteReadError: the URL could not be read after ``retries`` retries.

    """
    cached = None if cache_dir is None else cache_path(url, cache_dir)
    if cached is not None and cached.exists():
        if expected_size is None or cached.stat().st_size == expected_size:
            return open(cached, "rb")
        log.warning("cached %s has the wrong size; fetching %s again", cached, url)
    data = fetch_bytes(url, retries=retries, backoff=backoff, expected_size=expected_size)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cached.name}.", dir=cached.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, cached)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return io.BytesIO(data)


def glob_urls(pattern: str) -> list[str]:
    """Expand a URL glob (``s3://bucket/shards/*.tar``) with the protocol's fsspec filesystem.

    Raises:
        FileNotFoundError: nothing matches.

    """
    fs, path = _filesystem(pattern)
    proto = protocol(pattern)
    found = sorted(fs.glob(path))
    urls = [p if "://" in p else f"{proto}://{p.lstrip('/') if proto != 'file' else p}" for p in found]
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern!r}")
    return urls
