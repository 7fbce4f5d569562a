"""Writing files and folders so that readers never see half of one.

Every output goes to a uniquely named hidden sibling of its target, then ``os.replace`` moves it in
place. Temporary names carry the writer's host and pid (``.<name>.<host>-<pid>-<random>.tmp``), so

- concurrent writers never share a temporary file (the last rename wins, whole);
- any failure, ``KeyboardInterrupt`` or SIGTERM (the CLI turns SIGTERM into an exception) removes
  the temporary file before the error propagates;
- a run killed with SIGKILL leaves a temporary file that the next writer of the same target removes
  (its pid is dead on this host; other hosts' leftovers are removed once a day old).

Writes that fail for lack of space or permission raise :class:`OutputError` naming the target.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FOREIGN_STALE_SECONDS = 24 * 3600
"""Temporary files of another host are removed only when older than this."""


class OutputError(OSError):
    """An output could not be written (no space, no permission, ...); the message names the target."""


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def temp_path(target: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh temporary path next to ``target``: ``.<name>.<host>-<pid>-<random>.tmp<suffix>``."""
    target = Path(target)
    return target.with_name(f".{target.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    """Best-effort removal of a temporary file or folder (never raises)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def clean_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of ``target`` left by dead writers; returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    host = _host_tag()
    for path in target.parent.glob(glob.escape(f".{target.name}.") + "*.tmp*"):
        tag, _, rest = path.name[len(target.name) + 2:].partition("-")
        pid_text = rest.partition("-")[0]
        if "." in tag or not pid_text.isdigit():
            continue
        if tag == host:
            stale = int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))
        else:
            try:
                stale = time.time() - path.lstat().st_mtime > FOREIGN_STALE_SECONDS
            except FileNotFoundError:
                continue
        if stale:
            _remove(path)
            removed.append(path)
    return removed


LOW_SPACE_BYTES = 1 << 20
"""A failed write with less free space than this is reported as a full disk."""


def output_error(target: str | os.PathLike, exc: BaseException) -> OutputError:
    """``exc`` (an ``OSError``, or torch's ``RuntimeError`` for a failed write) as one message naming
    ``target``; call it before removing partial files, so a full disk is still seen as full."""
    if isinstance(exc, OutputError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is not None:
        cause = os.strerror(code)
    else:
        try:
            free = shutil.disk_usage(Path(target).parent).free
        except OSError:
            free = None
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if free is not None and free < LOW_SPACE_BYTES:
            cause, code = f"No space left on device ({free} bytes free; {detail})", errno.ENOSPC
        else:
            cause = f"write failed ({detail})"
    err = OutputError(f"cannot write {target}: {cause}")
    err.errno = code
    return err


def _default_mode(path: Path) -> None:
    """Give ``path`` the permissions of a normally created file (``0666`` minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from exc


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary sibling of ``path`` (same suffix), then rename it onto ``path``.

    The file gets the usual permissions (``0666`` minus the umask). On any error or interrupt the
    temporary file is removed; ``OSError``/torch ``RuntimeError`` from the write become :class:`OutputError`.
    """
    path = Path(path)
    _make_parent(path)
    clean_stale_temps(path)
    tmp = temp_path(path, path.suffix)
    try:
        write(tmp)
        _default_mode(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        error = output_error(path, exc)
        _remove(tmp)
        raise error from exc
    except BaseException:
        _remove(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``out``, swapping out an existing ``out`` atomically."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        trash = temp_path(out)
        os.replace(out, trash)
        os.replace(tmp, out)
        _remove(trash)
    else:
        os.replace(tmp, out)


@contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; on success it replaces ``out`` in one rename.

    On any error or interrupt the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    _make_parent(out)
    clean_stale_temps(out)
    tmp = temp_path(out)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise output_error(out, exc) from exc
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        replace_folder(tmp, out)
    except OSError as exc:
        _remove(tmp)
        raise output_error(out, exc) from exc


class OutputBusyError(OutputError):
    """Another live process holds the lock on an output."""


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _read_owner(lock: Path) -> tuple[str, int] | None:
    try:
        host, _, pid = lock.read_text().strip().partition(" ")
        return host, int(pid)
    except (OSError, ValueError):
        return None


@contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.<name>.lock`` next to ``target`` while writing it; a second writer gets :class:`OutputBusyError`.

    A lock left by a dead process on this host is taken over. The lock is removed on exit.
    """
    target = Path(target)
    _make_parent(target)
    lock = _lock_path(target)
    me = f"{_host_tag()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(lock)
            if owner is not None and owner[0] == _host_tag() and not _pid_alive(owner[1]):
                lock.unlink(missing_ok=True)  # left by a killed run
                continue
            who = f"process {owner[1]}" if owner else "another process"
            raise OutputBusyError(f"{target} is being written by another segcal run ({who}); wait "
                                  f"for it to finish or choose another output (lock file: {lock})") from None
        except OSError as exc:
            raise output_error(target, exc) from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise OutputBusyError(f"could not take the lock {lock} for {target}")
    try:
        yield lock
    finally:
        if _read_owner(lock) == (_host_tag(), os.getpid()):
            lock.unlink(missing_ok=True)


@contextmanager
def new_dirs_removed_on_failure(path: str | os.PathLike) -> Iterator[None]:
    """On an error inside, remove the folders above and at ``path`` that did not exist before and are empty."""
    path = Path(path).absolute()
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check a file can be written there, before long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "write-check")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise output_error(folder, exc) from exc
    return folder
