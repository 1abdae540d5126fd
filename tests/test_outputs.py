"""Outputs are whole or absent: read-only folders, full disks and SIGTERM during cropssl-shard."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from cropssl.cli.shard import main as shard_main
from cropssl.io.atomic import OutputError, atomic_dir, atomic_path, remove_stale
from tests.conftest import REAL_FILES, require_shared


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_out_is_named(tmp_path, capsys):
    require_shared(REAL_FILES["wide"])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert shard_main([str(REAL_FILES["wide"]), "--out", str(ro / "shards")]) == 2
        assert "read-only" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_permission_and_space_errors_become_output_errors(tmp_path, monkeypatch):
    """The translation of the OSErrors a read-only mount / full disk raise (simulated: this machine runs as
    root on a roomy disk), naming the path, the space needed and what to do; the temporary is removed."""
    target = tmp_path / "map.nc"
    full = pytest.raises(OutputError, match=r"no space left on the device writing .*map\.nc \(about 5\.0 MB")
    with full, atomic_path(target, needed_bytes=5_000_000) as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not list(tmp_path.iterdir())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    ro = pytest.raises(OutputError, match=r"cannot write .*shards: read-only file system.*writable")
    with ro, atomic_dir(tmp_path / "shards"):
        pass


def test_full_disk_in_a_real_tmpfs(tmp_path):
    """A real ENOSPC where a small tmpfs can be mounted (skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        full = pytest.raises(OutputError, match="no space left")
        with full, atomic_path(mnt / "big.bin", needed_bytes=4_000_000) as tmp:
            tmp.write_bytes(os.urandom(4_000_000))
        assert not list(mnt.iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_sigterm_during_shard_leaves_no_temporary(tmp_path):
    """SIGTERM while cropssl-shard writes: the hidden temporary is removed, nothing is half-written; a
    temporary left by a SIGKILL is removed by the next run of the same --out."""
    require_shared(REAL_FILES["cube"])
    out = tmp_path / "shards"
    script = f"""
import time
import cropssl.data.shard_writer as writer
real = writer.encode_record
def slow(samples):
    time.sleep(0.05)
    return real(samples)
writer.encode_record = slow  # the name the writer calls
from cropssl.cli.shard import main
main([{str(REAL_FILES["cube"])!r}, "--out", {str(out)!r}, "--samples-per-record", "64"])
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list(tmp_path.glob(".shards.*")) and time.time() - t0 < 120:
        time.sleep(0.02)
    assert list(tmp_path.glob(".shards.*")), "the writer never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists() and not list(tmp_path.glob(".shards.*"))
    # a SIGKILL leaves the temporary; the next write of the same --out removes it
    stale = tmp_path / ".shards.abc123.tmp"
    stale.mkdir()
    (stale / "shard-000000.tar").write_bytes(b"partial")
    assert remove_stale(out) == [stale] and not stale.exists()


def test_cli_names_an_unwritable_out(tmp_path, monkeypatch, capsys):
    """cropssl-shard turns the OutputError into its one-line message (exit 2), no traceback."""
    require_shared(REAL_FILES["wide"])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tarfile.TarFile.addfile", full)
    assert shard_main([str(REAL_FILES["wide"]), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "cropssl-shard: error: no space left on the device writing" in err and "MB are needed" in err
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))
