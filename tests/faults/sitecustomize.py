"""Fault injection for the reliability tests; Python loads it at start-up through PYTHONPATH.

Armed only in a stage process (`python -m stages.<name>`) and only when FAULT_SPEC names that
stage: FAULT_SPEC=<stage>:<mode>:<n>, events appended as JSON lines to FAULT_LOG.
  count   record every write event under the working directory (n unused)
  kill    at the n-th write event (1-based), SIGKILL this process: after a Parquet row group is
          written but before the file is closed (a file without its footer), right after a file
          is opened for writing (an empty file), or just before a rename (a finished temporary
          not yet in place)
  fail    at the n-th write event, raise OSError(FAULT_ERRNO, default ENOSPC) instead of writing:
          a full disk (or, with EROFS / EACCES, a read-only or forbidden directory) mid-write
  pause   at the first write event, create FAULT_LOG + ".paused" and wait until
          FAULT_LOG + ".go" exists (n: seconds to wait at most)
A write event is a Parquet write, an open() for writing, or os.replace / os.rename, of a path
inside the working directory (the repository).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import sys
import time

_spec = os.environ.get("FAULT_SPEC", "")
_argv = getattr(sys, "orig_argv", sys.argv)
_module = _argv[_argv.index("-m") + 1] if "-m" in _argv[:-1] else ""
_stage = _module.removeprefix("stages.") if _module.startswith("stages.") else None


def _install(stage: str, mode: str, n: int, log_path: str) -> None:
    root = os.getcwd()
    count = 0
    mode_ = mode

    def where(target) -> str | None:
        if isinstance(target, int):
            try:
                target = os.readlink(f"/proc/self/fd/{target}")
            except OSError:
                return None
        path = os.path.abspath(os.fsdecode(target))
        return os.path.relpath(path, root) if path.startswith(root + os.sep) else None

    def log(**event) -> None:
        with _open(log_path, "a") as f:
            f.write(json.dumps({"stage": stage, **event}) + "\n")

    def event(kind: str, target) -> bool:
        """Record a write event; True when this one is the one to fault."""
        nonlocal count
        rel = where(target)
        if rel is None:
            return False
        count += 1
        if mode == "count":
            log(event=count, kind=kind, path=rel)
        if mode == "pause" and count == 1:
            log(event=count, kind=kind, path=rel, action="paused")
            _open(log_path + ".paused", "w").close()
            deadline = time.monotonic() + n
            while not os.path.exists(log_path + ".go") and time.monotonic() < deadline:
                time.sleep(0.05)
        if mode == "fail" and count == n:
            code = int(os.environ.get("FAULT_ERRNO", errno.ENOSPC))
            log(event=count, kind=kind, path=rel, action="failed")
            raise OSError(code, os.strerror(code), rel)
        return mode == "kill" and count == n

    def die(kind: str, target) -> None:
        log(event=count, kind=kind, path=where(target), action="killed")
        os.kill(os.getpid(), signal.SIGKILL)

    _open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        writing = any(c in mode for c in "wax+")
        if writing and mode_ == "fail" and where(file) is not None and count + 1 == n:
            event("open", file)  # raises
        f = _open(file, mode, *args, **kwargs)
        if writing and event("open", file):
            f.flush()
            die("open", file)
        return f

    builtins.open = open_
    io.open = open_

    for name in ("replace", "rename"):
        original = getattr(os, name)

        def renamer(src, dst, *args, _original=original, _name=name, **kwargs):
            if event(_name, dst):
                die(_name, dst)
            return _original(src, dst, *args, **kwargs)

        setattr(os, name, renamer)

    import pyarrow.parquet as pq

    original_write = pq.ParquetWriter.write_table

    def write_table(self, table, *args, **kwargs):
        target = getattr(self, "where", None)
        target = target if isinstance(target, str | bytes | os.PathLike) else "."
        if mode_ == "fail" and where(target) is not None and count + 1 == n:
            event("parquet", target)  # raises
        original_write(self, table, *args, **kwargs)
        if event("parquet", target):
            die("parquet", target)

    pq.ParquetWriter.write_table = write_table


if _stage and _spec:
    _want, _mode, _n = [*_spec.split(":"), "0"][:3]
    if _want in (_stage, "*"):
        _install(_stage, _mode, int(_n), os.environ["FAULT_LOG"])
