"""What the transports that drive a program under a pty (telnet, openssl s_client) share:
starting it, writing to it before a deadline, and stopping it without losing what was already
written to it."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import time

import pexpect

from runner.errors import ConnectError, ConnectionClosed, DeadlineError, NetworkError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable


def spawn(exe: str, argv: list[str], prepare: Callable[[], None]) -> pexpect.spawn:
    """The program (argv[0] names it in errors) under a new pty, in the C locale, no shell and
    no per-send delay; `prepare` runs in the child before exec. Its pty fd is non-blocking.
    Raises ConnectError when it cannot be started."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        child = pexpect.spawn(exe, argv[1:], echo=False, env=env, preexec_fn=prepare)
    except (OSError, pexpect.ExceptionPexpect) as e:
        raise ConnectError(f"cannot start {argv[0]}: {e}") from None
    child.delaybeforesend = None
    os.set_blocking(child.child_fd, False)
    return child


def wait_until_flushed(pid: int, timeout: float = 1.0) -> None:
    """Let the program forward what was already written to its terminal: wait (bounded) until
    its terminal holds no unread input and it sleeps in poll/select twice in a row. Killing
    telnet earlier lost the last line sent (QUIT never reached the server in 22 of 30 runs).

    A write to the pty master does not reach the terminal's input at once: the kernel queues it
    in the pty's flip buffer and a kernel worker moves it on later; until then FIONREAD says 0
    and the program still sleeps in poll, as if all were forwarded. That took up to 4 ms (about
    1 write in 10000 over 1 ms, more under CPU load), so two looks 1 ms apart could both be
    fooled and the last line was lost (tests/test_transports_e2e.py, two busy loops on two
    cores: 1 run in 30). poll() on the terminal waits for that worker (n_tty_poll flushes the
    buffer work; tests/test_transport_telnet.py checks it), so each look polls first and
    FIONREAD then counts every byte written."""
    try:
        tty_path = os.readlink(f"/proc/{pid}/fd/0")
        fd = os.open(tty_path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        time.sleep(0.02)
        return
    idle = 0
    end = time.monotonic() + timeout
    terminal = select.poll()
    terminal.register(fd, select.POLLIN)
    try:
        while time.monotonic() < end and idle < 2:
            terminal.poll(0)  # our bytes still in the flip buffer reach the input queue first
            unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            try:
                with open(f"/proc/{pid}/wchan") as f:
                    wchan = f.read()
            except OSError:
                wchan = "poll"
            asleep = "poll" in wchan or "select" in wchan
            if not asleep and _ended(pid):
                break  # (it exited: the server closed, say) nothing more will be forwarded
            idle = idle + 1 if unread == 0 and asleep else 0
            time.sleep(0.001)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ended(pid: int) -> bool:
    """Has the process exited (a zombie not yet reaped, or gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]  # (the name in parentheses may hold spaces)
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def kill(child: pexpect.spawn | None) -> None:
    """Transport.abort for a spawned program: SIGKILL, so a read of its pty on another thread
    ends at once (close() still stops and reaps it)."""
    if child is not None and child.pid:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except OSError:
            pass


def stop(child: pexpect.spawn) -> None:
    """Flush, then SIGTERM (SIGKILL after 1 s), then close the pty. The program is killed before
    the pty closes: telnet reading EOF from its terminal would send EOF characters to the server."""
    try:
        if child.isalive():
            wait_until_flushed(child.pid)
            os.kill(child.pid, signal.SIGTERM)
            end = time.monotonic() + 1.0
            while child.isalive() and time.monotonic() < end:
                time.sleep(0.002)
            if child.isalive():
                os.kill(child.pid, signal.SIGKILL)
    except (OSError, pexpect.ExceptionPexpect):
        pass
    # pexpect sleeps 100 ms in close() by default; the child is already gone
    child.delayafterclose = 0
    child.ptyproc.delayafterclose = 0
    try:
        child.close(force=True)
    except (OSError, pexpect.ExceptionPexpect):
        pass


def write_all(fd: int, data: bytes, *, peer: str, deadline: float, program: str) -> None:
    """Write data to the program's terminal before the deadline (a non-blocking fd). The
    first write is tried straight away (a pty takes a few kB at once); only when the terminal is
    full does it wait, with select, against the deadline."""
    try:
        n = os.write(fd, data)
    except BlockingIOError:
        n = 0
    except OSError as e:
        raise _write_error(e, peer, program) from None
    if n == len(data):
        return
    out = memoryview(data)[n:]
    while out:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineError(f"sending to {peer} did not complete before the deadline")
        _, w, _ = select.select([], [fd], [], remaining)
        if not w:
            continue
        try:
            n = os.write(fd, out[:4096])
        except BlockingIOError:
            continue
        except OSError as e:
            raise _write_error(e, peer, program) from None
        out = out[n:]


def _write_error(e: OSError, peer: str, program: str) -> Exception:
    if e.errno == errno.EIO:
        return ConnectionClosed(f"connection to {peer} closed ({program} exited)")
    return NetworkError(f"writing to {program} failed: {e.strerror}")
