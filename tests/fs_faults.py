"""Real filesystems that fail: a read-only mount and a small tmpfs that fills, for the tests.

Root ignores permission bits, so a ``chmod`` cannot make a directory unwritable here; a
read-only bind mount and a tmpfs of a few pages can. Mounting needs root (or a mount
namespace); where the test process cannot mount, the fixtures skip with the reason, and
.ci/run, which runs as root, can. Every mount is undone when its test ends.
:func:`unwritable` works for every user: permission bits for others, a mount for root;
:func:`as_permission_bits_say` runs a command for which permission bits count, even as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {done.stderr.strip() or done.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def can_mount() -> str | None:
    """None when this process may mount filesystems, else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs or a read-only bind mount needs root"
    return None


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[str]:
    """The directory ``path`` refuses writes until the block ends; yields the system's reason.

    For a user other than root, its permission bits (0500: ``Permission denied``); root
    ignores them, so for root a read-only bind mount of it on itself (``Read-only file
    system``). What is in it stays readable.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500)
        try:
            yield os.strerror(errno.EACCES)
        finally:
            path.chmod(mode)
        return
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield os.strerror(errno.EROFS)
    finally:
        _umount(path)


def as_permission_bits_say() -> list[str]:
    """What to put before a command so that permission bits apply to it (``chmod 0`` denies).

    Nothing for a user other than root. Root's capabilities to read and write whatever the
    bits say (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) are dropped from the command's
    bounding set with ``setpriv``: it is still root, the bits deny it as they deny anyone.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores permission bits, and setpriv (util-linux) is not installed")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only bind mount (writes fail with EROFS, even for root)."""
    reason = can_mount()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "read-only"
    path.mkdir()
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


class SmallDisk:
    """A tmpfs of ``size`` bytes at ``path``; :meth:`fill` leaves ``free`` bytes free."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def fill(self, free: int) -> None:
        """Take all but ``free`` bytes (rounded to pages) with a filler file."""
        stat = os.statvfs(self.path)
        available = stat.f_bavail * stat.f_frsize
        with open(self.filler, "ab") as handle:
            handle.write(b"\0" * max(0, available - free))

    def free_up(self) -> None:
        """The operator makes room: the filler goes."""
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 1 MiB tmpfs (writes past it fail with ENOSPC); fill it with :meth:`SmallDisk.fill`."""
    reason = can_mount()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "small-disk"
    path.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path))
    try:
        yield SmallDisk(path, 1 << 20)
    finally:
        _umount(path)
