"""XSLT 1.0 with untrusted stylesheets over untrusted documents, in a child process.

`Transformer(stylesheet, params)` starts `python -m threadsvc.xml.transform`, which compiles
the stylesheet once and then transforms the documents it is sent, one at a time. The work runs
in a process of its own because libxslt cannot be interrupted: a stylesheet that does
exponential work (two recursive calls per level stay far below the recursion limit) or builds
a huge tree would otherwise hold a server thread, its CPU and its memory for good. The parent
kills the child on cancel, after `DOCUMENT_SECONDS` on one document, and when the child
crashes or runs out of its `MEMORY_BYTES` of address space; the next document gets a new child.

What a stylesheet may do (`Engine`, which the child runs):

- It is parsed by a hardened parser: no DTD loading, no entities, no network, no huge trees,
  and a resolver that refuses every URL, so nothing is read while it compiles.
- Before it compiles, `threadsvc.xml.stylesheet.check` refuses includes and imports, extension
  elements and every call of a function that is not XPath's or XSLT's (EXSLT, libxslt's own,
  anything else, under any prefix): no extension function is registered here, and the EXSLT
  ones that libxslt builds in can therefore never be called.
- At run time, `XSLTAccessControl` denies reading and writing files and the network:
  `document()` of a file or a URL, and `xsl:document` (XSLT 1.1) writing one, fail the
  document with libxslt's message, which names the URL and never holds its content.
- libxslt stops recursion deeper than its limit (3000) with an error for that document.
- A document's output above `MAX_OUTPUT` bytes is refused for that document.

Documents go through the same kind of parser. One that declares entities (XXE, "billion
laughs") or refers to one is refused, never expanded; a malformed one is refused with the
parser's message. Either way that document fails and the others go on.
"""

from __future__ import annotations

import json
import os
import posixpath
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, cast

from lxml import etree

from threadsvc.xml.stylesheet import XSL, StylesheetError
from threadsvc.xml.stylesheet import check as check_stylesheet

MAX_OUTPUT = 64 * 1024 * 1024  # bytes of one document's output
DOCUMENT_SECONDS = 300.0  # to transform one document (or compile the stylesheet)
MEMORY_BYTES = 2 * 1024 * 1024 * 1024  # address space of the child process
MAX_MESSAGES = 20  # xsl:message texts kept per document
MAX_TEXT = 2_000  # characters of one message or error
START_SECONDS = 60.0  # for the child to start and answer
POLL_SECONDS = 0.1  # how often the parent checks for a cancel while it waits

RESERVED_PARAM = "profile_run"  # lxml's own keyword: no stylesheet parameter can have the name

class Refused(Exception):
    """Raised by the resolver: nothing may be loaded."""


@dataclass(frozen=True)
class Outcome:
    """One document's transformation: its output, or why there is none."""

    output: bytes | None
    extension: str = ".xml"  # from xsl:output: .html, .txt or .xml
    error: str | None = None
    messages: tuple[str, ...] = field(default=())  # xsl:message texts and libxslt warnings


def output_path(path: str, extension: str) -> str:
    """The path of a document's output: its own, with `extension` for its extension."""
    directory, name = posixpath.split(path)
    stem, old = posixpath.splitext(name)
    return posixpath.join(directory, (stem if old else name) + extension)


# -- in the child ----------------------------------------------------------------------------
class _DenyAll(etree.Resolver):
    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        raise Refused(f"Loading {str(system_url)[:300]} is refused")


def _parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )
    parser.resolvers.add(_DenyAll())
    return parser


def _access_control() -> etree.XSLTAccessControl:
    return etree.XSLTAccessControl(
        read_file=False, write_file=False, create_dir=False,
        read_network=False, write_network=False,
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _parse(data: bytes, what: str) -> etree._ElementTree:
    """Parse `data` (a document or the stylesheet) with the hardened parser; entities in any
    form are refused. Raises ValueError saying why."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{what} is not well-formed XML: {_clip(str(exc.msg))}") from None
    except Refused as exc:
        raise ValueError(f"{what}: {exc}") from None
    tree = root.getroottree()
    dtd = tree.docinfo.internalDTD
    declared = [entity.name for entity in dtd.iterentities()] if dtd is not None else []
    if declared:
        names = ", ".join(str(name) for name in declared[:5])
        raise ValueError(f"{what} declares entities ({names}); entities are never expanded")
    for reference in root.iter(etree.Entity):
        raise ValueError(
            f"{what} refers to the entity {reference.text} (line {reference.sourceline}); "
            "entities are never expanded"
        )
    return tree


def _log_texts(entries: Iterable[Any]) -> list[str]:
    """Distinct texts of libxslt's log, each with the stylesheet line when known."""
    texts: list[str] = []
    for entry in entries:
        text = _clip(str(entry.message or ""))
        if not text or text == "unknown error":
            continue
        if entry.filename == "<xslt>" and entry.line:
            text = f"{text} (stylesheet line {entry.line})"
        if text not in texts:
            texts.append(text)
    return texts


class Engine:
    """A stylesheet compiled once, applied in this process (the child runs it)."""

    def __init__(
        self,
        stylesheet: bytes,
        params: Mapping[str, str] | None = None,
        *,
        max_output: int = MAX_OUTPUT,
        refuse_extensions: bool = True,  # False only to test the access control under it
    ) -> None:
        try:
            tree = _parse(stylesheet, "The stylesheet")
        except ValueError as exc:
            raise StylesheetError(str(exc)) from None
        if refuse_extensions:
            check_stylesheet(tree)
        try:
            self.xslt = etree.XSLT(tree, regexp=False, access_control=_access_control())
        except Refused as exc:
            raise StylesheetError(f"The stylesheet does not compile: {exc}") from None
        except etree.XSLTParseError as exc:
            details = "; ".join(_log_texts(exc.error_log)) or _clip(str(exc))
            raise StylesheetError(f"The stylesheet does not compile: {details}") from None
        self.method = self._method(tree)
        given = dict(params or {})
        if RESERVED_PARAM in given:
            raise StylesheetError(f"A stylesheet parameter cannot be named {RESERVED_PARAM}")
        self.params = {name: etree.XSLT.strparam(value) for name, value in given.items()}
        self.max_output = max_output

    @staticmethod
    def _method(tree: etree._ElementTree) -> str | None:
        method = None
        for output in tree.getroot().iterchildren(f"{{{XSL}}}output"):
            method = output.get("method", method)
        return None if method is None else str(method).strip()

    def extension(self, result: etree._XSLTResultTree) -> str:
        method = self.method
        if method is None:  # XSLT 1.0 §16: html when the result's root is an <html>
            root = result.getroot()
            html = root is not None and isinstance(root.tag, str) and root.tag.lower() == "html"
            method = "html" if html else "xml"
        return {"html": ".html", "xhtml": ".html", "text": ".txt"}.get(method, ".xml")

    def run(self, data: bytes) -> Outcome:
        try:
            document = _parse(data, "The document")
        except ValueError as exc:
            return Outcome(None, error=str(exc))
        try:
            result = self.xslt(document, profile_run=False, **self.params)
        except etree.XSLTApplyError as exc:
            texts = _log_texts(self.xslt.error_log)
            detail = "; ".join(texts) if texts else _clip(str(exc))
            return Outcome(None, error=_clip(f"The stylesheet failed: {detail}"))
        messages = tuple(_log_texts(self.xslt.error_log)[:MAX_MESSAGES])
        output = bytes(cast(Any, result))  # serialised as xsl:output says
        if len(output) > self.max_output:
            return Outcome(
                None, error=f"The output is larger than {self.max_output} bytes, the limit for "
                "one document", messages=messages,
            )
        return Outcome(output, self.extension(result), messages=messages)


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
