"""`transform`: an XSLT 1.0 stylesheet applied to a set of XML documents (docs/api.md#jobs).

Parameters: `documents` (XML files, or zip files standing for the documents inside),
`stylesheet` (one XSLT 1.0 file) and up to 100 `param.NAME` text fields (NAME matching
`[A-Za-z_][A-Za-z0-9_.-]{0,63}`, not `profile_run`, which lxml keeps for itself), passed to
the stylesheet as string parameters `NAME`. The result is `transformed.zip`: one output per
document at the document's path, with the extension the stylesheet's `xsl:output` method gives
(`.html`, `.txt`, else `.xml`).

What happens when something is wrong:

- The uploads break a limit or a path climbs out of the set (zip-slip), there is no document,
  or the stylesheet is refused or does not compile: the thread fails with a message saying
  so, and there is no result.
- A document fails (malformed, declares or uses entities, the stylesheet fails on it,
  `document()` of a file or URL is denied, recursion too deep, output above
  `MAX_OUTPUT` bytes, more than `DOCUMENT_SECONDS` spent on it): one `ERROR` event naming the
  document, no entry for it in the zip, and the others are still transformed. The thread then
  ends `failed` (it reported errors) and still carries the zip of the outputs made.
- Two documents whose outputs would have the same path (`a.xml` and `a.dita` both giving
  `a.html`): the second one is an error, as above.
- The outputs together above `MAX_TOTAL_OUTPUT` bytes: the thread fails, without a result.

The work itself is in `threadsvc.xml.transform` (its child process) and every security rule
about stylesheets in `threadsvc.xml.engine`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from threadsvc.errors import BadParameter
from threadsvc.jobs.documents import DOCUMENTS, DocumentSet, Limits
from threadsvc.models import Level
from threadsvc.runner.context import Context
from threadsvc.runner.params import File
from threadsvc.runner.registry import JobSpec, job
from threadsvc.uploads import InputFile, Upload
from threadsvc.xml.engine import MAX_OUTPUT, RESERVED_PARAM, output_path
from threadsvc.xml.render import xml_safe
from threadsvc.xml.stylesheet import StylesheetError
from threadsvc.xml.transform import DOCUMENT_SECONDS, Transformer

PARAM_PREFIX = "param."
PARAM_FIELD = re.compile(r"param\.[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_PARAMS = 100
MAX_PARAM_VALUE = 10_000  # characters
MAX_STYLESHEET = 16 * 1024 * 1024  # bytes
MAX_TOTAL_OUTPUT = 4 * 1024 * 1024 * 1024  # bytes of all outputs, uncompressed

__all__ = ["DOCUMENT_SECONDS", "MAX_OUTPUT", "TransformJob", "transform"]


class TransformFailed(Exception):
    """The thread cannot go on; the message says why."""


@dataclass(frozen=True)
class TransformJob(JobSpec):
    """The declared parameters, and any number of `param.NAME` text fields."""

    def parse_params(self, fields: Iterable[tuple[str, str | Upload]]) -> dict[str, Any]:
        declared: list[tuple[str, str | Upload]] = []
        given: dict[str, str] = {}
        for name, raw in fields:
            if not name.startswith(PARAM_PREFIX):
                declared.append((name, raw))
                continue
            if not PARAM_FIELD.fullmatch(name):
                raise BadParameter(
                    name[:80], "is not a stylesheet parameter name: param.NAME, with NAME "
                    "matching [A-Za-z_][A-Za-z0-9_.-]{0,63}"
                )
            if name == PARAM_PREFIX + RESERVED_PARAM:
                raise BadParameter(name, "is reserved: lxml cannot pass a parameter so named")
            if isinstance(raw, Upload):
                raise BadParameter(name, "must be text, not a file")
            if name in given:
                raise BadParameter(name, "is given more than once")
            if len(raw) > MAX_PARAM_VALUE:
                raise BadParameter(name, f"is longer than {MAX_PARAM_VALUE} characters")
            if xml_safe(raw) != raw:
                raise BadParameter(name, "holds characters that XML cannot hold")
            if len(given) >= MAX_PARAMS:
                raise BadParameter(name, f"is one stylesheet parameter too many (at most "
                                   f"{MAX_PARAMS})")
            given[name] = raw
        return {**super().parse_params(declared), **given}


def stylesheet_params(params: dict[str, Any]) -> dict[str, str]:
    """The stylesheet's parameters from the thread's: `param.NAME` → `NAME`."""
    return {
        key[len(PARAM_PREFIX):]: value
        for key, value in params.items()
        if key.startswith(PARAM_PREFIX) and isinstance(value, str)
    }


@job(
    "transform",
    spec=TransformJob,
    params={
        "documents": DOCUMENTS,
        "stylesheet": File(required=True, doc="an XSLT 1.0 stylesheet"),
    },
    title="Transform thread",
)
async def transform(ctx: Context) -> None:
    """Apply an XSLT 1.0 stylesheet to each document; the result is a zip of the outputs."""
    documents = await ctx.run_sync(DocumentSet, ctx.files("documents"), Limits())
    if not len(documents):
        raise TransformFailed("No documents to transform: the uploads hold no files")
    sheets = ctx.files("stylesheet")
    if not sheets:
        raise TransformFailed("No stylesheet was given")
    stylesheet = await ctx.run_sync(_read_stylesheet, sheets[0])
    params = stylesheet_params(ctx.params)
    await ctx.progress(0, len(documents))
    async with ctx.result_file("transformed.zip", "application/zip") as out:
        done = await ctx.run_sync(_transform_all, ctx, documents, stylesheet, params, out)
    total = len(documents)
    await ctx.message(f"Transformed {done} of {total} document{'s' if total != 1 else ''}")


def _read_stylesheet(item: InputFile) -> bytes:
    if item.size > MAX_STYLESHEET:
        raise TransformFailed(f"The stylesheet is larger than {MAX_STYLESHEET} bytes")
    return item.path.read_bytes()


def _transform_all(
    ctx: Context, documents: DocumentSet, stylesheet: bytes, params: dict[str, str], out: IO[bytes]
) -> int:
    """In a worker thread: each document in turn, its output added to the zip at once."""
    total, done, written = len(documents), 0, 0
    paths: dict[str, str] = {}  # output path → the document that made it
    try:
        with Transformer(stylesheet, params, check=ctx.check_cancelled) as transformer, \
                zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for index, (entry, data) in enumerate(documents, start=1):
                ctx.check_cancelled()
                outcome = transformer.transform(data)
                for text in outcome.messages:
                    ctx.sync.log(f"Document {entry.path}: {text}", Level.INFO)
                if outcome.output is None:
                    ctx.sync.error(f"Document {entry.path}: {outcome.error}")
                elif (target := output_path(entry.path, outcome.extension)) in paths:
                    ctx.sync.error(
                        f"Document {entry.path}: its output {target} is already the output "
                        f"of {paths[target]}"
                    )
                else:
                    written += len(outcome.output)
                    if written > MAX_TOTAL_OUTPUT:
                        raise TransformFailed(
                            f"The outputs exceed {MAX_TOTAL_OUTPUT} bytes in all"
                        )
                    paths[target] = entry.path
                    archive.writestr(target, outcome.output)
                    done += 1
                    ctx.sync.log(f"Document {entry.path} transformed to {target}.")
                ctx.sync.progress(index, total)
    except StylesheetError as exc:
        raise TransformFailed(str(exc)) from None
    return done
