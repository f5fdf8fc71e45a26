"""XSLT 1.0 with untrusted stylesheets over untrusted documents, in a child process.

`Transformer(stylesheet, params)` starts `python -m threadsvc.xml.transform`, which compiles
the stylesheet once and then transforms the documents it is sent, one at a time. The work runs
in a process of its own because libxslt cannot be interrupted: a stylesheet that does
exponential work (two recursive calls per level stay far below the recursion limit) or builds
a huge tree would otherwise hold a server thread, its CPU and its memory for good. The parent
kills the child on cancel, after `DOCUMENT_SECONDS` on one document, and when the child
crashes or runs out of its `MEMORY_BYTES` of address space; the next document gets a new child.

What the child may do with a stylesheet and its documents is threadsvc.xml.engine's business;
here are the process, its limits and the frames the two sides exchange on its pipes (8 bytes
of length, then the bytes).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

from threadsvc.xml.engine import MAX_OUTPUT, Engine, Outcome
from threadsvc.xml.stylesheet import StylesheetError

DOCUMENT_SECONDS = 300.0  # to transform one document (or compile the stylesheet)
MEMORY_BYTES = 2 * 1024 * 1024 * 1024  # address space of the child process
START_SECONDS = 60.0  # for the child to start and answer
POLL_SECONDS = 0.1  # how often the parent checks for a cancel while it waits


# -- the child's side of the pipe ------------------------------------------------------------
def _read_frame(stream: Any) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    body: bytes = stream.read(size)
    return body if len(body) == size else None


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


def _watch_parent(parent: int) -> None:
    """End the child when the server is gone, even in the middle of a transformation."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _child(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    source = os.fdopen(os.dup(0), "rb")
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray output goes to the server's log, never into the pipe
    config_frame = _read_frame(source)
    stylesheet = _read_frame(source)
    if config_frame is None or stylesheet is None:
        return
    config = json.loads(config_frame)
    try:
        import resource

        memory = int(config["memory"])
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    try:
        engine = Engine(stylesheet, config["params"], max_output=int(config["max_output"]))
    except StylesheetError as exc:
        _write_frame(sink, json.dumps({"error": str(exc)}).encode())
        return
    except MemoryError:
        _write_frame(sink, json.dumps({"error": "The stylesheet is too large"}).encode())
        return
    _write_frame(sink, b"{}")
    while (data := _read_frame(source)) is not None:
        spent = False
        try:
            outcome = engine.run(data)
        except MemoryError:
            outcome, spent = Outcome(None, error="The transformation ran out of memory"), True
        head = {"extension": outcome.extension, "error": outcome.error,
                "messages": list(outcome.messages), "restart": spent}
        _write_frame(sink, json.dumps(head).encode())
        _write_frame(sink, outcome.output or b"")
        if spent:
            return  # the next document gets a fresh process


# -- in the server ---------------------------------------------------------------------------
class _Stopped(Exception):
    """The child ended or took too long; the message says which."""


class Transformer:
    """The server's side: a child process with the compiled stylesheet, used from one
    worker thread. `check` is called while waiting and may raise (a cancel): the child is
    killed and the exception goes on."""

    def __init__(
        self,
        stylesheet: bytes,
        params: Mapping[str, str] | None = None,
        *,
        check: Callable[[], None] = lambda: None,
        max_output: int = MAX_OUTPUT,
        timeout: float = DOCUMENT_SECONDS,
        memory: int = MEMORY_BYTES,
    ) -> None:
        self._stylesheet = stylesheet
        self._config = json.dumps(
            {"params": dict(params or {}), "max_output": max_output, "memory": memory}
        ).encode()
        self._check = check
        self._timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        self.close(kill=kind is not None)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start a child and compile the stylesheet; raises StylesheetError when refused."""
        self.close()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "threadsvc.xml.transform", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._buffer.clear()
        try:
            self._send(self._config)
            self._send(self._stylesheet)
            answer = json.loads(self._receive(START_SECONDS + self._timeout))
        except _Stopped as exc:
            self.close(kill=True)
            raise StylesheetError(f"The stylesheet could not be compiled: {exc}") from None
        except BaseException:
            self.close(kill=True)
            raise
        if answer.get("error"):
            self.close()
            raise StylesheetError(str(answer["error"]))

    def transform(self, data: bytes) -> Outcome:
        """Transform one document; a failure of any kind is the Outcome's error."""
        if self._process is None or self._process.poll() is not None:
            self.start()
        try:
            self._send(data)
            head = json.loads(self._receive(self._timeout))
            output = self._receive(self._timeout)
        except _Stopped as exc:
            self.close(kill=True)
            return Outcome(None, error=str(exc))
        except BaseException:
            self.close(kill=True)
            raise
        if head.get("restart"):
            self.close(kill=True)
        messages = tuple(str(text) for text in head.get("messages", ()))
        if head.get("error"):
            return Outcome(None, error=str(head["error"]), messages=messages)
        return Outcome(output, str(head.get("extension", ".xml")), messages=messages)

    def close(self, kill: bool = False) -> None:
        """End the child: at once with `kill`, else by closing its input (it then exits)."""
        process, self._process = self._process, None
        if process is None:
            return
        if kill and process.poll() is None:
            process.kill()
        for pipe in (process.stdin, process.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            process.wait(0.5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # -- frames --------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(len(data).to_bytes(8, "big"))
            self._process.stdin.write(data)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Stopped(self._ended()) from None

    def _receive(self, seconds: float) -> bytes:
        head = self._read(8, seconds)
        return self._read(int.from_bytes(head, "big"), seconds)

    def _read(self, size: int, seconds: float) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + seconds
        while len(self._buffer) < size:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise _Stopped(f"The transformation took longer than {seconds:g} s, the limit")
            ready, _, _ = select.select([fd], [], [], min(POLL_SECONDS, left))
            if ready:
                chunk = os.read(fd, max(65_536, min(size - len(self._buffer), 1 << 22)))
                if not chunk:
                    raise _Stopped(self._ended())
                self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def _ended(self) -> str:
        assert self._process is not None
        try:
            code = self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self._process.wait()
        if code == -signal.SIGKILL:
            return "The transformation was stopped (killed: out of memory?)"
        if code < 0:
            return f"The transformation crashed (signal {-code})"
        return f"The transformation stopped unexpectedly (exit status {code})"


if __name__ == "__main__":
    _child(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
