"""Host calls that differ between platforms: peak RSS units, file locks, extended attributes and birth time
on rewrite, the TLS trust store, Windows refusing cleanly, and no platform code outside ``llava_edge.host``."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from llava_edge.cli import main
from llava_edge.errors import UnsupportedPlatformError
from llava_edge.host import files, process, refuse_unsupported_os, tls
from llava_edge.photos.files import folder_lock, replace_file

PACKAGE = Path(__file__).resolve().parents[1] / "llava_edge"
MiB = 2**20


# peak RSS


def test_ru_maxrss_is_kib_on_linux_and_bytes_on_macos() -> None:
    assert process.rss_bytes(2048, "linux") == 2 * MiB
    assert process.rss_bytes(2 * MiB, "darwin") == 2 * MiB


@pytest.mark.skipif(sys.platform == "win32", reason="wait4 is POSIX")
def test_a_childs_peak_rss_is_measured_in_bytes() -> None:
    """A child that touches 200 MiB peaks between 200 MiB and 1 GiB, read through wait4 as the benchmark does.
    The child is started by a small interpreter, as the benchmark starts its workers: Linux carries a parent's
    resident size over fork into the child's peak, and this test process may be large."""
    measure = textwrap.dedent("""
        import os, subprocess, sys
        from llava_edge.host import process
        touch = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
        child = subprocess.Popen([sys.executable, "-c", touch])
        _, status, usage = os.wait4(child.pid, 0)
        print(os.waitstatus_to_exitcode(status), process.child_peak_rss_bytes(usage))
    """)
    result = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, check=True, timeout=120)
    code, peak = map(int, result.stdout.split())
    assert code == 0
    assert 200 * MiB <= peak < 1024 * MiB
    assert 10 * MiB < process.peak_rss_bytes() < 64 * 1024 * MiB  # this interpreter, in bytes


def test_busy_time_comes_from_the_cpu_line_of_proc_stat() -> None:
    stat = "cpu  100 20 30 1000 50 5 5 0 0 0\ncpu0 50 10 15 500 25 2 3 0 0 0\n"
    assert process.parse_busy_seconds(stat, 100) == pytest.approx((100 + 20 + 30 + 5 + 5) / 100)
    assert process.parse_busy_seconds("", 100) == 0.0
    if Path("/proc/stat").exists():
        assert process.busy_seconds() > 0


# locks


def test_a_held_lock_refuses_a_second_holder_and_its_file_goes_with_it(tmp_path: Path) -> None:
    lock = tmp_path / ".out.jsonl.lock"
    release = files.acquire_lock(lock, wait=False)
    assert release is not None and lock.exists()
    assert files.acquire_lock(lock, wait=False) is None
    release()
    assert not lock.exists()
    with files.file_lock(lock):
        assert files.acquire_lock(lock, wait=False) is None


def test_a_lock_in_another_process_is_seen(tmp_path: Path) -> None:
    lock = tmp_path / ".pair.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from llava_edge.host.files import file_lock\n"
         f"with file_lock(__import__('pathlib').Path({str(lock)!r})):\n print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert files.acquire_lock(lock, wait=False) is None
    finally:
        holder.communicate("", timeout=60)
    release = files.acquire_lock(lock, wait=False)
    assert release is not None
    release()


def test_a_read_only_folder_is_written_unlocked(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with folder_lock(missing):  # no lock file can be made in a folder that does not exist
        pass


# extended attributes and birth time


def _user_xattr_or_skip(path: Path) -> None:
    if not hasattr(os, "setxattr"):
        pytest.skip("no os.setxattr on this platform (macOS goes through copyfile)")
    try:
        os.setxattr(path, "user.llava_edge.note", b"keep me")
    except OSError as err:
        pytest.skip(f"the temporary file system refuses user.* extended attributes ({err.strerror})")


def test_a_rewritten_file_keeps_its_extended_attributes(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"old")
    _user_xattr_or_skip(photo)
    replace_file(photo, b"new", original=photo.stat())
    assert photo.read_bytes() == b"new"
    assert os.getxattr(photo, "user.llava_edge.note") == b"keep me"


def test_on_macos_the_attributes_go_through_copyfile_with_copyfile_xattr(tmp_path: Path) -> None:
    calls: list[tuple[bytes, bytes, None, int]] = []

    def copyfile(source: bytes, destination: bytes, state: None, flags: int) -> int:
        calls.append((source, destination, state, flags))
        return 0

    files.copy_xattrs(tmp_path / "a.jpg", tmp_path / ".a.jpg.tmp", "darwin", copyfile)
    assert calls == [(bytes(tmp_path / "a.jpg"), bytes(tmp_path / ".a.jpg.tmp"), None, 1 << 2)]


def test_carrying_the_birth_time_keeps_access_and_modification_times(tmp_path: Path) -> None:
    """macOS only moves the birth time; the two utime calls must leave the other times as they were."""
    original, new = tmp_path / "old.jpg", tmp_path / "new.jpg"
    original.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(new, ns=(1_700_000_000_000_000_000, 1_700_000_100_000_000_000))

    class MacStat:
        st_birthtime = 1_600_000_000.0

    fd = os.open(new, os.O_RDONLY)
    try:
        files.carry_birth_time(fd, MacStat(), "darwin")  # type: ignore[arg-type]
        files.carry_birth_time(fd, original.stat(), "linux")  # no birth time to set there: untouched
    finally:
        os.close(fd)
    assert (new.stat().st_atime_ns, new.stat().st_mtime_ns) == (1_700_000_000_000_000_000, 1_700_000_100_000_000_000)


# TLS


def test_linux_trusts_the_system_store_through_the_default_context() -> None:
    context = tls.tls_context("linux")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_macos_trusts_the_keychain_through_truststore() -> None:
    truststore = pytest.importorskip("truststore", reason="truststore is installed on macOS (and with huggingface-hub)")
    context = tls.tls_context("darwin")
    assert isinstance(context, truststore.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


# Windows


def test_windows_stops_with_one_error_that_names_wsl2() -> None:
    refuse_unsupported_os("linux")
    refuse_unsupported_os("darwin")
    with pytest.raises(UnsupportedPlatformError, match="WSL2"):
        refuse_unsupported_os("win32")


def test_on_windows_the_cli_and_captioner_refuse_and_import_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 1
    assert "WSL2" in result.output and "Traceback" not in result.output
    from llava_edge.api import Captioner

    with pytest.raises(UnsupportedPlatformError, match="WSL2"):
        Captioner("synthetic-tiny")


def test_the_package_imports_without_fcntl_and_resource() -> None:
    """Windows has neither module: importing the package and its CLI must not need them."""
    code = ("import sys; sys.modules['fcntl'] = None; sys.modules['resource'] = None\n"
            "import llava_edge, llava_edge.cli, llava_edge.host.process, llava_edge.photos.files\n"
            "print(llava_edge.host.process.peak_rss_bytes())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


# platform code stays in llava_edge/host


def test_proc_paths_and_xattr_calls_live_only_in_the_host_package() -> None:
    pattern = re.compile(r"[\"']/proc\b|\bos\.(list|get|set|remove)xattr\b|^\s*(import|from)\s+(fcntl|resource)\b",
                         re.MULTILINE)
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if "host" not in path.relative_to(PACKAGE).parts[:1] and pattern.search(path.read_text())]
    assert offenders == []
