"""Quiet the notebook kernels' harmless messages in ``reproduce``'s log, and let everything else through.

A kernel started by papermill inherits the process's standard error. Two of its messages say nothing
about the notebook: ipykernel's warning that the local connection is "running over TCP without
encryption" (printed by every kernel), and "KeyboardInterrupt caught in kernel", which a kernel logs when
the shutdown that follows a successful notebook interrupts it. :func:`quiet_kernel_noise` points file
descriptor 2 (what child processes inherit) at a pipe whose reader drops exactly the lines of
:data:`HARMLESS` and copies every other byte to the real standard error, while ``sys.stderr`` of this
process keeps writing to the real one directly (progress bars stay live). A kernel's traceback, a crash
message or any other line still shows, except after the user interrupts ``reproduce`` (Ctrl-C): the kernel
is then being torn down under its notebook, and what it writes from that moment (a traceback of its closed
sockets) is dropped, so the interrupted ``reproduce`` ends on its own one line. For the same reason an
interrupt also silences this process's ``asyncio`` logger: nbclient's cell task, failed with the dead kernel
and never awaited, would otherwise be reported ("Task exception was never retrieved") when the garbage
collector finds it, which can be after that line.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
from typing import Iterator

#: kernel messages that are dropped (whole lines); nothing else is
HARMLESS = (
    re.compile(r"Kernel is running over TCP without encryption"),
    re.compile(r"KeyboardInterrupt caught in kernel"),
)


def is_harmless(line: str) -> bool:
    return any(p.search(line) for p in HARMLESS)


class _Mute:
    """Set once the user interrupts: from then on every kernel line is dropped."""

    on = False


def _copy_filtered(read_fd: int, write_fd: int, mute: _Mute | None = None) -> None:
    """Copy ``read_fd`` to ``write_fd`` line by line, dropping harmless lines (and, once ``mute.on``, every
    line), until end of file."""
    mute = mute or _Mute()
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not mute.on and not is_harmless(line.decode("utf-8", "replace")):
                os.write(write_fd, line + b"\n")
    if pending and not mute.on and not is_harmless(pending.decode("utf-8", "replace")):
        os.write(write_fd, pending)
    os.close(read_fd)


@contextlib.contextmanager
def quiet_kernel_noise() -> Iterator[None]:
    """While open, processes started from here write their standard error through the filter."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (an embedded interpreter): change nothing
        yield
        return
    read_fd, write_fd = os.pipe()
    mute = _Mute()
    reader = threading.Thread(target=_copy_filtered, args=(read_fd, real, mute), daemon=True)
    reader.start()
    previous = _mute_on_interrupt(mute)
    saved_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(real), "wb", buffering=0), write_through=True,
                                  encoding=getattr(saved_stderr, "encoding", None) or "utf-8", errors="replace")
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    except KeyboardInterrupt:
        mute.on = True
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the torn-down kernel's orphaned tasks
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        sys.stderr.flush()
        replacement, sys.stderr = sys.stderr, saved_stderr
        os.dup2(real, 2)           # the pipe's last writer in this process is gone
        reader.join(timeout=5)     # a kernel that outlived its notebook may still hold the pipe open
        replacement.close()
        if not reader.is_alive():
            os.close(real)


def _mute_on_interrupt(mute: _Mute):
    """Wrap this process's SIGINT handler so that an interrupt first mutes the kernels' output; the previous
    handler, which the caller restores, or None where nothing was wrapped (not the main thread, or SIGINT not
    handled by Python)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        return None

    def interrupted(signum, frame):
        mute.on = True
        previous(signum, frame)

    signal.signal(signal.SIGINT, interrupted)
    return previous
