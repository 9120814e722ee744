"""Running in the background: detaching (python-daemon), the pidfile, and the log file.

``--daemon`` is for init systems that do not supervise (SysV scripts, a cron ``@reboot``);
under systemd, Docker or any supervisor run in the foreground instead (see
deploy/forkwire.service, ``Type=exec``).

The command that starts the daemon waits for it: the daemon tells it over a pipe that it
listens (or why it could not start), so ``forkwire-server --daemon`` exits 0 only for a
server that accepts connections, and non-zero with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

#: Exit status of the starting command when the daemon died without a word.
DIED = 1


class Notifier:
    """The daemon's end of the pipe to the command that started it (told once)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self) -> None:
        """The server listens: the starting command exits 0."""
        self._tell(f"ready {os.getpid()}")

    def failed(self, status: int, message: str) -> None:
        """The server cannot start: the starting command prints ``message``, exits ``status``."""
        self._tell(f"{status} {message}")

    def _tell(self, line: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # the starting command was killed: nobody to tell
            os.write(fd, line.replace("\n", " ").encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(fd)


def daemonize() -> Notifier:
    """Detach from the terminal; in the daemon, return its :class:`Notifier`. The calling
    process never returns: it waits for the daemon's word and exits with it.

    The daemon keeps the working directory (relative paths in the settings keep their
    meaning); its stdout and stderr go nowhere until :func:`redirect_output` points them
    at the log file.
    """
    import daemon  # only the daemon mode needs it

    read, write = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(write)
        _wait_for_daemon(read, first)
    os.close(read)
    context = daemon.DaemonContext(
        working_directory=os.getcwd(),
        umask=0o022,
        files_preserve=[write],
        # SIGTERM and SIGHUP are the server's own (graceful stop, reopen the log).
        signal_map={signal.SIGTTIN: None, signal.SIGTTOU: None, signal.SIGTSTP: None},
    )
    context.open()
    return Notifier(write)


def _wait_for_daemon(read: int, first: int) -> NoReturn:
    # The first child forks the daemon and exits at once: reap it, then wait for the word.
    os.waitpid(first, 0)
    data = b""
    with os.fdopen(read, "rb") as pipe:
        while b"\n" not in data:
            chunk = pipe.read1(4096)
            if not chunk:
                break
            data += chunk
    word, _, rest = data.decode(errors="replace").partition("\n")[0].partition(" ")
    if word == "ready":
        print(f"forkwire-server: running in the background, pid {rest}", file=sys.stderr)
        os._exit(0)
    if word.isdigit():
        print(f"forkwire-server: {rest}", file=sys.stderr)
        os._exit(int(word) or DIED)
    print(
        "forkwire-server: the daemon exited before it was ready (see its log file)",
        file=sys.stderr,
    )
    os._exit(DIED)


class PidfileBusy(Exception):
    """Another live process is named in the pidfile."""


@contextlib.contextmanager
def pidfile(path: str) -> Iterator[None]:
    """Write this process's pid to ``path`` for the block; remove it after, if still ours.

    A pidfile naming a live process refuses the start (:class:`PidfileBusy`); one naming a
    dead process (a crash, a SIGKILL) is stale and replaced.
    """
    other = _pid_in(path)
    if other is not None and other != os.getpid() and _alive(other):
        raise PidfileBusy(f"{path} names pid {other}, which is running")
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        file.write(f"{os.getpid()}\n")
    os.replace(temporary, path)  # readers never see a half-written pid
    try:
        yield
    finally:
        if _pid_in(path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(path)


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def redirect_output(log_file: str) -> None:
    """Point stdout and stderr (file descriptors 1 and 2, which job children inherit) at
    ``log_file``, opened anew for appending: at start, and on SIGHUP after logrotate moved
    the old file away."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
