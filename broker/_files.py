"""Private files: secrets and key material written so that no one else can read them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["private_dir", "write_java_argfile", "write_private"]

_PRIVATE_MODE = 0o600
_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: only the owner may list or enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, _DIR_MODE)
    return path


def write_private(path: Path, data: bytes, mode: int = _PRIVATE_MODE) -> None:
    """Write ``data`` to ``path`` with ``mode`` (0600) from the first byte, atomically.

    A temporary file is created with the mode already set (never readable by
    others, not even briefly), written, synced, then renamed over ``path``.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may have cleared bits
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_java_argfile(path: Path, arguments: list[str]) -> None:
    """A private Java ``@argfile`` holding a main class and its arguments.

    ``java ... @file`` reads them from the file, so secrets among them (SCRAM
    passwords) never appear in the process list, which every local user can
    read. Each argument is quoted; characters that quoting cannot carry are
    refused (SAFER passes paths, ids and URL-safe passwords).
    """
    lines = []
    for argument in arguments:
        if any(c in argument for c in '"\\\n\r'):
            raise ValueError("a Java argfile argument has a quote, backslash or line break")
        lines.append(f'"{argument}"\n')
    write_private(path, "".join(lines).encode())
