"""Reading the files a scenario is made of (the scenario, its fragments, --vars-file and
--env-file): regular files of a bounded size, never a device or a FIFO. No YAML here, so the
warm path (runner.load.api) can use it without importing PyYAML."""

from __future__ import annotations

import os
import stat

from runner.errors import ScenarioError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_FILE_BYTES", "read_file"]

#: the largest scenario, fragment, --vars-file or --env-file read (a bigger one is refused
#: before it is parsed: /dev/zero or a 50 MB file cannot take the loader's memory or time)
MAX_FILE_BYTES = 16 << 20
_PIPE_PATHS = ("/dev/stdin", "/dev/fd/", "/proc/self/fd/")


def read_file(path: str | Path, what: str = "a scenario file", *, pipe_ok: bool = False) -> bytes:
    """A file's bytes, or ScenarioError naming the file and why it cannot be read. Only a
    regular file of at most MAX_FILE_BYTES is read; with pipe_ok, also a pipe given as
    /dev/stdin or /dev/fd/N (`mailrun <(generate)`), up to the same size. A device, a socket or
    a named FIFO is refused without reading it (opening a FIFO never waits for a writer)."""
    display = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ScenarioError(f"{display}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{display}: is a directory, not {what}") from None
    except OSError as e:
        raise ScenarioError(f"{display}: cannot read: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ScenarioError(f"{display}: is a directory, not {what}")
        piped = pipe_ok and stat.S_ISFIFO(mode) and display.startswith(_PIPE_PATHS)
        if not stat.S_ISREG(mode) and not piped:
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a file"
            )
            raise ScenarioError(f"{display}: is {kind}, not a regular file ({what} must be one)")
        if piped:
            os.set_blocking(fd, True)
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ScenarioError(f"{display}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{display}: the file is larger than {MAX_FILE_BYTES >> 20} MiB, the limit for {what}"
        )
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, n = [], 0
    while n < limit and (chunk := os.read(fd, min(1 << 20, limit - n))):
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)
