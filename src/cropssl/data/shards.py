"""Webdataset shards of pixel time series: writing, reading and the manifest.

Layout of a shard directory::

    shard-000000.tar   webdataset tar; each *record* packs up to ``samples_per_record`` pixels as
    shard-000001.tar   ``<key>.x.npy`` (float32 [n,T,17], physical units), ``<key>.mask.npy`` (bool),
    ...                ``<key>.month.npy`` (int8 [n,T]), ``<key>.latlon.npy``, ``<key>.label.npy``,
    manifest.json      ``<key>.year.npy``, optional ``<key>.dw.npy`` and ``<key>.meta.json``.

Packing many pixels per record keeps the per-record tar overhead (two 512-byte headers per file) small
compared with the payload (~1 KB per pixel at T=12). Writing is deterministic: same samples in, same
bytes out (fixed tar metadata, no timestamps, sorted keys), and atomic: shards go to a temporary
directory that is renamed into place only when everything is written.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.data.remote import is_remote
from cropssl.schema import BANDS, SCHEMA_VERSION, PixelSamples

MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:06d}.tar"
_ARRAYS = ("x", "mask", "month", "latlon", "label", "year")


class ShardError(RuntimeError):
    """A shard is missing, truncated or corrupt. The message names the shard."""


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` to ``tar`` as the file ``name`` (fixed mtime / owner: byte-identical shards)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def encode_record(samples: PixelSamples) -> dict[str, bytes]:
    """Encode a (small) set of samples as the files of one webdataset record."""
    files = {
        "x.npy": _npy_bytes(samples.x.astype(np.float32)),
        "mask.npy": _npy_bytes(samples.mask.astype(bool)),
        "month.npy": _npy_bytes(samples.month.astype(np.int8)),
        "latlon.npy": _npy_bytes(samples.latlon.astype(np.float32)),
        "label.npy": _npy_bytes(samples.label.astype(np.int64)),
        "year.npy": _npy_bytes(samples.year.astype(np.int16)),
    }
    if samples.dynamic_world is not None:
        files["dw.npy"] = _npy_bytes(samples.dynamic_world.astype(np.int8))
    meta = {k: [str(v) for v in samples.meta[k]] for k in sorted(samples.meta)}
    files["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    return files


def _load_npy(data: bytes, what: str, url: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt headers
        raise ShardError(f"corrupt array {what!r} in shard {url}: {exc}") from exc


def decode_record(record: dict[str, Any]) -> PixelSamples:
    """Decode one webdataset record (raw bytes per file suffix) into :class:`PixelSamples`.

    Raises:
        ShardError: naming the shard and record when a file is missing or inconsistent.

    """
    url = f"{record.get('__url__', '?')} (record {record.get('__key__', '?')})"
    missing = [f"{k}.npy" for k in _ARRAYS if f"{k}.npy" not in record] + (
        [] if "meta.json" in record else ["meta.json"]
    )
    if missing:
        raise ShardError(f"shard {url} is truncated or corrupt: record lacks {missing}")
    arr = {k: _load_npy(record[f"{k}.npy"], k, url) for k in _ARRAYS}
    try:
        meta = {k: np.asarray(v, dtype=object) for k, v in json.loads(record["meta.json"]).items()}
        dw = _load_npy(record["dw.npy"], "dw", url) if "dw.npy" in record else None
        return PixelSamples(
            x=arr["x"],
            mask=arr["mask"],
            month=arr["month"],
            latlon=arr["latlon"],
            label=arr["label"],
            year=arr["year"],
            meta=meta,
            dynamic_world=dw,
        )
    except (ValueError, KeyError) as exc:
        raise ShardError(f"shard {url} holds an inconsistent record: {exc}") from exc


def read_manifest_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a local ``manifest.json``; a broken file raises :class:`ShardError` naming it and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(
            f"{path} is not valid JSON ({exc}); the shard directory's manifest is damaged: re-create the "
            "shards with cropssl-shard (or restore the file)"
        ) from exc
    if not isinstance(data, dict):
        raise ShardError(f"{path} does not hold a manifest (a JSON object); re-create the shards")
    return data


def check_manifest(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    """Check that a manifest is a cropssl shard manifest of the current schema; return it."""
    if manifest.get("format") != "cropssl-shards":
        raise ValueError(f"{where} is not a cropssl shard manifest")
    if manifest.get("bands") != list(BANDS):
        raise ValueError(f"{where}: bands {manifest.get('bands')} differ from the schema's {list(BANDS)}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{where}: schema version {manifest.get('schema_version')} != {SCHEMA_VERSION}; "
            "re-shard the input"
        )
    return manifest


#: Manifests of remote shard directories fetched by this process (``None``: the directory has none).
_REMOTE_MANIFESTS: dict[str, dict[str, Any] | None] = {}


def load_manifest(shard_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a shard directory (a local path or a URL).

    Raises:
        FileNotFoundError: the directory has no manifest (for a URL: it answers 404), naming it.
        ValueError: the file is not a cropssl manifest of the current schema.

    """
    if is_remote(str(shard_dir)):
        from cropssl.data.remote import fetch_bytes

        base = str(shard_dir).rstrip("/")
        url = f"{base}/{MANIFEST}"
        try:
            manifest = json.loads(fetch_bytes(url))
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"no {MANIFEST} at {url} (HTTP 404): a shard directory URL needs its manifest; or list the "
                "shard URLs instead (e.g. https://host/dir/shard-{000000..000009}.tar)"
            ) from exc
        _REMOTE_MANIFESTS[base] = manifest
        return check_manifest(manifest, url)
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"no {MANIFEST} in {shard_dir}: is this a cropssl shard directory? Create one with "
            "`cropssl-shard INPUT... --out DIR` or `cropssl-synth --out DIR`."
        )
    return check_manifest(read_manifest_file(path), str(path))


_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz")


def _resolve_url(s: str) -> list[str]:
    import braceexpand

    from cropssl.data.remote import glob_urls

    if s.startswith("pipe:") or "{" in s:
        return list(braceexpand.braceexpand(s))
    if any(c in s for c in "*?["):
        return glob_urls(s)
    if s.split("?", 1)[0].endswith(_TAR_SUFFIXES):
        return [s]
    base = s.rstrip("/")  # a shard directory URL: its manifest lists the shards
    return [f"{base}/{e['name']}" for e in load_manifest(base)["shards"]]


def resolve_shards(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Turn a shard spec into a sorted list of shard URLs / paths.

    A spec is a shard directory (with a manifest), a glob, a brace pattern
    (``shard-{000000..000009}.tar``), a single ``.tar`` path, or a list of those. Each may also be remote
    (see :mod:`cropssl.data.remote`): a shard directory URL (``https://host/shards/``: its manifest is
    fetched), a shard URL or a brace pattern of URLs, a URL glob, or a ``pipe:`` command.
    """
    if not isinstance(spec, (str, os.PathLike)) and isinstance(spec, Sequence):
        out: list[str] = []
        for s in spec:
            out.extend(resolve_shards(s))
        return out
    s = str(spec)
    if is_remote(s):
        return _resolve_url(s)
    p = Path(s)
    if p.is_dir():
        manifest = load_manifest(p)
        return [str(p / e["name"]) for e in manifest["shards"]]
    if "{" in s:
        import braceexpand

        paths = list(braceexpand.braceexpand(s))
    elif any(c in s for c in "*?["):
        paths = sorted(glob.glob(s))
    else:
        paths = [s]
    if not paths:
        raise FileNotFoundError(f"no shards match {s!r}")
    missing = [q for q in paths if not Path(q).exists()]
    if missing:
        raise FileNotFoundError(f"shard(s) not found: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return paths


def _manifest_or_none(shard_dir: str) -> dict[str, Any] | None:
    if is_remote(shard_dir):
        if shard_dir.startswith("pipe:"):
            return None
        if shard_dir not in _REMOTE_MANIFESTS:
            from cropssl.data.remote import fetch_bytes

            try:
                _REMOTE_MANIFESTS[shard_dir] = json.loads(fetch_bytes(f"{shard_dir}/{MANIFEST}", retries=1))
            except Exception:  # no manifest (or unreachable): sizes are unknown, reading still works
                _REMOTE_MANIFESTS[shard_dir] = None
        return _REMOTE_MANIFESTS[shard_dir]
    path = Path(shard_dir) / MANIFEST
    return read_manifest_file(path) if path.exists() else None


def shard_entries(urls: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The manifest entry (``num_samples``, ``bytes``, ...) of every shard whose directory has a manifest.

    Works for local paths and URLs (the manifest is looked for beside the shard); shards without one
    (and ``pipe:`` commands) are left out.
    """
    from cropssl.data.remote import url_name, url_parent

    by_dir: dict[str, list[str]] = {}
    for u in urls:
        if u.startswith("pipe:"):
            continue
        d = url_parent(u) if is_remote(u) else str(Path(u).parent)
        by_dir.setdefault(d, []).append(u)
    out: dict[str, dict[str, Any]] = {}
    for d, members in by_dir.items():
        manifest = _manifest_or_none(d)
        if not manifest:
            continue
        entries = {e["name"]: e for e in manifest.get("shards", [])}
        for u in members:
            e = entries.get(url_name(u) if is_remote(u) else Path(u).name)
            if e is not None:
                out[u] = e
    return out


def check_local_shard(url: str) -> None:
    """Compare a local shard's size with its manifest entry; raise :class:`ShardError` if truncated."""
    if is_remote(url):
        return
    p = Path(url)
    if not p.exists():
        raise ShardError(f"shard {url} does not exist")
    manifest_path = p.parent / MANIFEST
    if not manifest_path.exists():
        return
    entries = {e["name"]: e for e in read_manifest_file(manifest_path).get("shards", [])}
    entry = entries.get(p.name)
    if entry is not None and p.stat().st_size != entry["bytes"]:
        raise ShardError(
            f"shard {url} is truncated or corrupt: {p.stat().st_size} bytes on disk, manifest says "
            f"{entry['bytes']}. Re-create it, or set skip_corrupt=true to skip it with a warning."
        )


def preflight(urls: Sequence[str]) -> list[tuple[str, str]]:
    """Check every local shard's presence and size against its manifest before training (stat, no read).

    Returns:
        ``(shard, problem)`` for every missing or truncated shard (empty when all are fine). Remote shards
        are checked when they are read.

    """
    bad: list[tuple[str, str]] = []
    entries = shard_entries([u for u in urls if not is_remote(u)])
    for url in urls:
        if is_remote(url):
            continue
        p = Path(url)
        if not p.exists():
            bad.append((url, "missing"))
            continue
        expected = entries.get(url, {}).get("bytes")
        size = p.stat().st_size
        if expected is not None and size != expected:
            bad.append((url, f"{size} bytes on disk, manifest says {expected}"))
    return bad


def check_compatible(sources: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The T, bands and cadence all shard directories of a stream (or mix) share, from their manifests.

    Raises:
        ShardError: two directories differ in T, bands or cadence (naming both).

    """
    dirs = dict.fromkeys(str(Path(u).parent) for src in sources for u in src if not is_remote(u))
    seen: dict[str, Any] = {}
    first: str | None = None
    for d in dirs:
        manifest = _manifest_or_none(d)
        if not manifest:
            continue
        here = {
            "timesteps": manifest.get("timesteps"),
            "bands": manifest.get("bands"),
            "cadence": manifest.get("cadence", "month"),
        }
        if first is None:
            first, seen = d, here
        elif here != seen:
            diff = {k: (seen[k], here[k]) for k in here if here[k] != seen[k]}
            raise ShardError(
                f"shards in {first} and {d} cannot be read together: they differ in {diff} ({first} first); "
                "re-shard them with the same --timesteps / --cadence"
            )
    return seen


def iter_shard(
    url: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retries: int = 3,
    expected_size: int | None = None,
) -> Iterator[PixelSamples]:
    """Yield the records of one shard (a local path or a URL) as :class:`PixelSamples`; errors name it.

    Args:
        url: Local path, URL or ``pipe:`` command of the shard.
        cache_dir: Keep a local copy of remote shards here (and read it from there next time).
        retries: Retries of a failed remote read (a missing URL is not retried).
        expected_size: Size of the shard in bytes (from the manifest), to detect truncated downloads.

    Raises:
        ShardError: if the shard is missing, truncated, corrupt or (remote) unreadable after the retries.

    """
    import webdataset as wds

    check_local_shard(url)
    try:
        if is_remote(url):
            from cropssl.data.remote import RemoteNotFoundError, open_remote

            try:
                stream = open_remote(url, cache_dir=cache_dir, retries=retries, expected_size=expected_size)
            except RemoteNotFoundError as exc:
                raise ShardError(f"shard {url} not found (HTTP 404 / no such object)") from exc
            except OSError as exc:
                raise ShardError(f"cannot fetch shard {url}: {exc}") from exc
            with stream:
                files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
                for record in wds.tariterators.group_by_keys(files):
                    yield decode_record(record)
            return
        for record in wds.tariterators.tarfile_samples([{"url": url}]):
            yield decode_record(record)
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(
            f"cannot read shard {url}: {exc}. It may be truncated or corrupt; re-create it, or set "
            "skip_corrupt=true to skip it with a warning."
        ) from exc


def iter_samples(urls: Iterable[str]) -> Iterator[PixelSamples]:
    """Yield records of several shards in order."""
    for url in urls:
        yield from iter_shard(url)


def read_shards(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> PixelSamples:
    """Read every sample of a shard spec into memory (evaluation, tests, small data)."""
    parts = list(iter_samples(resolve_shards(spec)))
    if not parts:
        raise ShardError(f"no samples in {spec}")
    return PixelSamples.concat(parts)
