"""A fork server: one process imports flowdag once, then forks a child per job.

The kill tests run a job in another process and SIGKILL it (it kills itself at
the N-th step, or the test kills it), for every N: a fresh interpreter per job
costs its start and ``import flowdag`` (0.3-0.5 s), a fork costs milliseconds.
The children are real processes all the same, killed for real.

``ForkServer.start(fn, *args)`` forks a child that calls ``fn(*args)`` (``fn``
a module-level function, named by module and name; ``args`` JSON values) and
exits 0 when it returns (1 on an exception, its traceback on stderr); its
stdout and stderr go to files, or its stdout to a FIFO the test reads as it
goes (``stream=True``). `Child.wait` gives a ``subprocess.CompletedProcess``,
its return code ``-9`` when the child was SIGKILLed, as `subprocess.run` does.
``ForkServer.warm(fn, *args)`` calls ``fn(*args)`` in the server itself, once,
for what every child would compute again (the sources a run's fingerprints read).

The server itself starts no thread (it checks before every fork: forking
after threads exist is unsafe) and opens no store: what a job imports is
imported before the fork, what it opens (LMDB environments, threads of a run)
is opened in the child.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
#: What the server imports at its start: flowdag, its CLI and what its runs and stores
#: import lazily, so that no child pays for it. (A job's own module is imported, with all it
#: imports, before its fork.)
PRELOAD = (
    "flowdag",
    "flowdag._commit",
    "flowdag._driver",
    "flowdag.launcher",
    "flowdag.scheduler",
    "flowdag.cli",
    "flowdag.stores",
    "flowdag.stores.lmdb_store",
    "flowdag.stores.json_store",
    "flowdag.stores.flatbuffers_store",
    "flowdag.stores._blobdir",
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.kdf.hkdf",
)
#: How long a job may take before the test stops waiting and fails.
TIMEOUT = 120.0


# -- the server process --------------------------------------------------------------------


def serve() -> None:
    """The server's loop: one JSON request a line on stdin, one JSON reply a line on stdout.

    ``{"target": "module:name", "args": [...], "out": path, "err": path}`` forks
    a child and replies ``{"pid": pid}``; ``{"wait": pid}`` replies
    ``{"status": code}`` once that child has ended; ``{"poll": pid}`` replies at once,
    ``{"status": null}`` while it runs; ``{"warm": "module:name", "args": [...]}`` calls
    it in the server itself and replies ``{"error": traceback or null}``.
    """
    for module in PRELOAD:
        importlib.import_module(module)
    ended: dict[int, int] = {}  # reaped by a poll, not yet waited for: their exit codes
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply: dict[str, Any]
        if "wait" in request:
            pid = request["wait"]
            if pid not in ended:
                ended[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            reply = {"status": ended.pop(pid)}
        elif "warm" in request:
            try:
                _target(request["warm"])(*request["args"])
                reply = {"error": None}
            except Exception:
                reply = {"error": traceback.format_exc()}
        elif "poll" in request:
            pid = request["poll"]
            if pid not in ended:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    ended[pid] = os.waitstatus_to_exitcode(status)
            reply = {"status": ended.get(pid)}
        else:
            target = _target(request["target"])  # imported before the fork
            assert threading.active_count() == 1, "the fork server must not start threads"
            pid = os.fork()
            if pid == 0:
                _child(target, request)
            reply = {"pid": pid}
        print(json.dumps(reply), flush=True)


def _target(name: str) -> Callable[..., object]:
    module, _, attribute = name.partition(":")
    target: Callable[..., object] = getattr(importlib.import_module(module), attribute)
    return target


def _child(target: Callable[..., object], request: dict[str, Any]) -> None:
    """In the forked child: stdin from /dev/null, stdout and stderr to the job's; never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            # A regular file is created; a FIFO (stream=True) is opened for its reader.
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        code = 0
        target(*request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):  # exiting anyway
                stream.flush()
        os._exit(code)


def exec_code(code: str, *argv: str) -> None:
    """A job running ``code`` as ``python -c code *argv`` would, in the forked child."""
    sys.argv = ["-c", *argv]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})


def python_m(module: str, cwd: str, env: dict[str, str], *argv: str) -> None:
    """A job running ``python -m module *argv`` in ``cwd`` with the environment ``env``.

    As a fresh interpreter would: ``sys.path`` starts with ``cwd`` then the
    ``PYTHONPATH`` of ``env`` (in place of the server's); at the end, the threads
    left running are joined and the atexit handlers run, as at an interpreter's
    exit. What the server preloaded stays imported (see `PRELOAD`).
    """
    _as_interpreter(
        cwd,
        env,
        os.path.abspath(cwd),
        [module, *argv],
        lambda: runpy.run_module(module, run_name="__main__", alter_sys=True),
    )


def python_script(script: str, cwd: str, env: dict[str, str], *argv: str) -> None:
    """A job running ``python script *argv`` in ``cwd`` with ``env``, as `python_m` does.

    ``sys.path`` starts with the script's folder, as for ``python script``.
    """
    path = os.path.abspath(os.path.join(cwd, script))
    _as_interpreter(
        cwd,
        env,
        os.path.dirname(path),
        [script, *argv],
        lambda: runpy.run_path(path, run_name="__main__"),
    )


def python_c(code: str, cwd: str, env: dict[str, str], *argv: str) -> None:
    """A job running ``python -c code *argv`` in ``cwd`` with ``env``, as `python_m` does."""
    _as_interpreter(
        cwd,
        env,
        "",
        ["-c", *argv],
        lambda: exec(compile(code, "<string>", "exec"), {"__name__": "__main__"}),
    )


def _as_interpreter(
    cwd: str, env: dict[str, str], first: str, argv: list[str], run: Callable[[], object]
) -> None:
    server_path = set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    base = [entry for entry in sys.path[1:] if entry not in server_path]
    extra = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = [first, *extra, *base]
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    sys.argv = argv
    code: int = 0
    try:
        run()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # a message: the interpreter prints it and exits 1
            print(exc.code, file=sys.stderr)
            code = 1
    finally:
        getattr(threading, "_shutdown")()  # noqa: B009 - what the interpreter calls at exit
        atexit._run_exitfuncs()
    if code:
        raise SystemExit(code)


# -- the test's side -----------------------------------------------------------------------


def _name(fn: Callable[..., object]) -> str:
    name = f"{fn.__module__}:{fn.__name__}"
    assert getattr(sys.modules[fn.__module__], fn.__name__, None) is fn, (
        f"{name}: a job is a module-level function"
    )
    return name


class Child:
    """A job forked by the server: its ``pid``; ``stdout`` to read as it goes if streamed."""

    def __init__(self, server: ForkServer, name: str, pid: int, out: Path, err: Path) -> None:
        self.server, self.name, self.pid = server, name, pid
        self._out, self._err = out, err
        self.stdout: TextIO | None = None
        if out.is_fifo():  # blocks until the child opened it: at once, it is its first step
            self.stdout = open(out)  # noqa: SIM115 - closed in wait

    def kill(self) -> None:
        """SIGKILL the child (if it has not ended yet: it is reaped in `wait` only)."""
        os.kill(self.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        """The child's return code if it has ended, else None (as `subprocess.Popen.poll`)."""
        status: int | None = self.server._request({"poll": self.pid})["status"]
        return status

    def wait(self, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Wait for the child to end (SIGKILLing it after ``timeout``, which fails the test)."""
        late = threading.Event()

        def overdue() -> None:
            late.set()
            self.kill()

        timer = threading.Timer(timeout, overdue)
        timer.start()
        try:
            status = self.server._request({"wait": self.pid})["status"]
        finally:
            timer.cancel()
        self.server.running.discard(self.pid)
        if self.stdout is not None:
            out = self.stdout.read()
            self.stdout.close()
        else:
            out = self._out.read_text()
        err = self._err.read_text()
        self._out.unlink()
        self._err.unlink()
        if late.is_set():
            raise TimeoutError(f"{self.name} did not end within {timeout} s; stderr:\n{err}")
        return subprocess.CompletedProcess([self.name], status, out, err)


class ForkServer:
    """The test's handle on a server process (see the module's docstring)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="flowdag-forkserver-"))
        self.jobs = 0
        self.running: set[int] = set()  # children not waited for yet
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.forkserver import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return line.strip()

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self._line())
        return reply

    def start(self, fn: Callable[..., object], *args: Any, stream: bool = False) -> Child:
        """Fork a child calling ``fn(*args)``; with ``stream``, read its stdout as it goes."""
        self.jobs += 1
        out, err = self.dir / f"{self.jobs}.out", self.dir / f"{self.jobs}.err"
        # Made here, so that a child killed before it opened them leaves them empty.
        if stream:
            os.mkfifo(out, 0o600)
        else:
            out.touch(0o600)
        err.touch(0o600)
        name = _name(fn)
        request = {"target": name, "args": list(args), "out": str(out), "err": str(err)}
        pid: int = self._request(request)["pid"]
        self.running.add(pid)
        return Child(self, name, pid, out, err)

    def warm(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` in the server itself, to fill caches every child then inherits.

        ``fn`` fills what a job computes once per process (the sources a run's
        fingerprints read, say); it must leave no thread and no store open.
        """
        error = self._request({"warm": _name(fn), "args": list(args)})["error"]
        assert error is None, f"warming the fork server failed:\n{error}"

    def run(
        self, fn: Callable[..., object], *args: Any, timeout: float = TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Fork a child calling ``fn(*args)`` and wait for it, as `subprocess.run` would."""
        return self.start(fn, *args).wait(timeout)

    def close(self) -> None:
        """Stop the server, first SIGKILLing the children a failed test left running."""
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        for leftover in self.dir.iterdir():
            leftover.unlink()
        self.dir.rmdir()


_shared: ForkServer | None = None


def shared() -> ForkServer:
    """This process's fork server, started at the first call (the ``fork_server`` fixture's).

    For helpers that are not fixtures; conftest closes it at the end of the session.
    """
    global _shared
    if _shared is None:
        _shared = ForkServer()
    return _shared


def close_shared() -> None:
    """Close the server `shared` started, if it did."""
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None
