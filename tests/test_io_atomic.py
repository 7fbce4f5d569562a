"""Atomic outputs: unique temporary names, cleanup on failure, interrupts and kills, full disks, locks."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segcal.io.atomic import (
    OutputBusyError,
    OutputError,
    atomic_write,
    atomic_write_text,
    check_writable,
    clean_stale_temps,
    output_lock,
    staged_folder,
    temp_path,
)
from segcal.io.checkpoint import write_checkpoint


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_temp_names_are_unique_hidden_siblings(tmp_path):
    target = tmp_path / "x.ckpt"
    names = {temp_path(target, ".ckpt") for _ in range(100)}
    assert len(names) == 100
    assert all(p.parent == tmp_path and p.name.startswith(".x.ckpt.") and p.name.endswith(".tmp.ckpt")
               for p in names)
    assert f"-{os.getpid()}-" in next(iter(names)).name


def test_failed_write_removes_its_temp_file_and_keeps_the_old_output(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(OutputError, match=r"cannot write .*out\.txt: write failed \(PytorchStreamWriter"):
        atomic_write(target, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda tmp: (tmp.write_text("x"), (_ for _ in ()).throw(KeyboardInterrupt()))[1])
    assert target.read_text() == "old" and _hidden(tmp_path) == []


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        with staged_folder(tmp_path / "folder") as tmp:
            (tmp / "b.txt").write_text("b")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_staged_folder_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "preds"
    with staged_folder(out) as tmp:
        (tmp / "a.npy").write_text("1")
    with pytest.raises(ValueError):
        with staged_folder(out) as tmp:
            (tmp / "b.npy").write_text("2")
            raise ValueError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["a.npy"] and _hidden(tmp_path) == []
    with staged_folder(out) as tmp:
        (tmp / "c.npy").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.npy"] and _hidden(tmp_path) == []


SLOW_WRITER = """
import sys, time
from pathlib import Path
from segcal.cli.main import _raise_terminated
from segcal.io.atomic import atomic_write
import signal
signal.signal(signal.SIGTERM, _raise_terminated)

def slow(tmp):
    tmp.write_text("partial")
    print("writing", flush=True)
    time.sleep(60)

try:
    atomic_write(Path(sys.argv[1]), slow)
except KeyboardInterrupt:
    sys.exit(143)
"""


def _start_slow_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_sigterm_mid_write_leaves_no_temp_file(tmp_path):
    proc = _start_slow_writer(tmp_path / "out.ckpt")
    assert len(_hidden(tmp_path)) == 1  # the temporary file exists while writing
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temp_file_is_removed_by_the_next_writer(tmp_path):
    target = tmp_path / "out.ckpt"
    proc = _start_slow_writer(target)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    leftover = _hidden(tmp_path)
    assert len(leftover) == 1 and not target.exists()
    live = temp_path(target, ".ckpt")  # a live writer's temp file (this process) is never touched
    live.write_text("mine")
    write_checkpoint({"x": torch.ones(2)}, target)
    assert _hidden(tmp_path) == [live.name]
    assert torch.load(target, weights_only=True)["x"].tolist() == [1.0, 1.0]


def test_foreign_hosts_temp_files_are_kept_until_old(tmp_path):
    target = tmp_path / "x.txt"
    foreign = tmp_path / ".x.txt.abcdef-1-00000000.tmp.txt"
    foreign.write_text("other host")
    assert clean_stale_temps(target) == [] and foreign.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(foreign, (old, old))
    assert clean_stale_temps(target) == [foreign] and not foreign.exists()


def test_full_disk_gives_one_error_and_leaves_nothing(full_disk):
    target = full_disk / "big.ckpt"
    with pytest.raises(OutputError, match=r"cannot write .*big\.ckpt: .*(No space left|disk full)"):
        write_checkpoint({"w": torch.zeros(1_000_000)}, target)
    with pytest.raises(OutputError, match=r"cannot write .*big\.npy: No space left on device"):
        atomic_write(full_disk / "big.npy", lambda tmp: np.save(tmp, np.zeros(1_000_000)))
    assert list(full_disk.iterdir()) == []


def test_read_only_outputs_are_named(readonly_dir):
    with pytest.raises(OutputError, match=r"cannot write .*readonly/sub: (Read-only file system|Permission denied)"):
        check_writable(readonly_dir / "sub")
    with pytest.raises(OutputError, match=r"cannot write .*readonly/a\.txt"):
        atomic_write_text(readonly_dir / "a.txt", "x")


def test_output_lock_refuses_a_second_writer_and_takes_over_dead_ones(tmp_path):
    target = tmp_path / "cal.ckpt"
    with output_lock(target) as lock:
        assert lock.exists()
        holder = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from segcal.io.atomic import OutputBusyError, output_lock
            try:
                with output_lock({str(target)!r}):
                    print("took it")
            except OutputBusyError as exc:
                print(exc)
            """)], capture_output=True, text=True, check=True)
        assert "being written by another segcal run" in holder.stdout and str(os.getpid()) in holder.stdout
        with pytest.raises(OutputBusyError, match="another segcal run"):
            with output_lock(target):
                pass
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    from segcal.io.atomic import _host_tag
    lock.write_text(f"{_host_tag()} {dead.stdout.strip()}")  # left by a killed run
    with output_lock(target):
        assert lock.read_text().endswith(str(os.getpid()))
    assert not lock.exists()
