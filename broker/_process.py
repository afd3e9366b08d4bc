"""Child processes that must never outlive us: the local Apache Kafka nodes.

A broker started by ``safer`` (or by the test suite) must stop when the Python
process that started it stops, however it stops. Three independent guards:

1. ``terminate()`` on ``stop()`` (and context-manager exit): SIGTERM, wait for a
   clean shutdown, SIGKILL, reap.
2. An ``atexit`` hook registered by the owner, for a normal interpreter exit.
3. Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` set in the child before ``exec``: the
   kernel sends SIGTERM to the child when its parent dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

__all__ = [
    "child_preexec",
    "free_port",
    "port_in_use",
    "processes_with_argument",
    "spawn",
    "terminate",
]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether a live listener holds ``host:port`` (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM the child when we die.

    libc is loaded here, in the parent, so the child (between fork and exec) only
    makes the system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0, 0) != 0:
            os._exit(126)
        # The parent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def child_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child that must die with this process (Linux PDEATHSIG).

    The child must be started from a thread that lives as long as the process:
    the main thread, or the event loop's (asyncio subprocesses are forked there).
    """
    return _pdeathsig_preexec()


def _popen(
    argv: list[str], env: dict[str, str], output: IO[bytes] | int, cwd: Path | None
) -> Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        env=env,
        cwd=cwd,
        close_fds=True,
        # Own session: a Ctrl-C in the terminal reaches Python, which then stops the
        # child in order, instead of killing both at once.
        start_new_session=True,
        preexec_fn=_pdeathsig_preexec(),
    )


_spawn_requests: queue.SimpleQueue[tuple[Callable[[], Popen[bytes]], Future[Popen[bytes]]]] = (
    queue.SimpleQueue()
)
_spawner_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _spawner_loop() -> None:
    while True:
        call, future = _spawn_requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    output: IO[bytes] | int,
    cwd: Path | None = None,
) -> Popen[bytes]:
    """Start a child that dies with this process, from a thread that lives as long.

    PDEATHSIG follows the forking *thread*: a child forked from a worker thread
    (``asyncio.to_thread``) would be killed when that thread ends. The main thread
    is fine; any other caller hands the fork to one daemon thread that never returns.
    """
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return _popen(argv, env, output, cwd)
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(
                target=_spawner_loop, name="safer-child-spawner", daemon=True
            )
            _spawner.start()
    future: Future[Popen[bytes]] = Future()
    _spawn_requests.put((lambda: _popen(argv, env, output, cwd), future))
    return future.result()


def terminate(process: Popen[Any], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=max(grace, 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def processes_with_argument(argument: bytes) -> list[int]:
    """Process ids of live processes with ``argument`` as one of their argv words."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if argument in cmdline.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)
