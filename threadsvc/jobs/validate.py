"""`validate`: a set of XML documents checked against one schema (docs/api.md#jobs).

The documents are the uploaded files of `documents`, a zip standing for the files inside it
(threadsvc.jobs.documents checks zip limits and paths before anything is read). The schema
language comes from `schema-type`, else from the schema file's extension; with no schema at
all, each document is validated against its own internal DTD subset. All XML work is in
threadsvc.xml.validation.

Each document is one progress step. A valid one is the message `Document PATH is valid.`;
each finding of an invalid one is an error (so the thread ends `failed` when any document is
invalid, as docs/api.md#statuses says of a job that reported an error), a warning (Schematron
role="warning") is a warning. The result, whatever the final status, is
`<validation-report>` (validation-report.xsd), written at the end from a spool on disk so that
memory does not grow with the set. A schema that cannot be used, an unsafe upload (zip bomb,
zip-slip) or an empty set fails the thread with a message saying so.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import PurePosixPath
from typing import IO, Any

from threadsvc.errors import BadParameter
from threadsvc.jobs.documents import DOCUMENTS, DocumentSet
from threadsvc.models import Group, Principal
from threadsvc.runner.context import Context
from threadsvc.runner.params import Choice, File
from threadsvc.runner.registry import JobSpec, job
from threadsvc.uploads import Upload
from threadsvc.xml.validation import (
    EXTENSIONS,
    KINDS,
    DocumentReport,
    Finding,
    SchemaKind,
    Validator,
    compile_schema,
    write_report,
)

REPORT_NAME = "validation-report.xml"


class NoDocuments(ValueError):
    """The upload holds no document (an empty zip, say)."""


def schema_kind(schema_name: str | None, declared: str | None) -> SchemaKind:
    """The schema language: `schema-type` when given, else the schema file's extension; no
    schema at all means each document's internal DTD subset. A BadParameter otherwise."""
    if declared is not None:
        if declared not in KINDS:
            raise BadParameter("schema-type", f"must be one of {', '.join(KINDS)}")
        if schema_name is None and declared != "dtd":
            raise BadParameter("schema", f"is required with schema-type {declared}")
        return declared
    if schema_name is None:
        return "dtd"
    suffix = PurePosixPath(schema_name.replace("\\", "/")).suffix.lower()
    kind = EXTENSIONS.get(suffix)
    if kind is None:
        raise BadParameter(
            "schema-type",
            f"is required: the schema's file name {schema_name[:100]!r} does not tell its "
            f"language ({', '.join(EXTENSIONS)}); give one of {', '.join(KINDS)}",
        )
    return kind


@dataclass(frozen=True)
class ValidateJob(JobSpec):
    def check(self, who: Principal, group: Group | None, params: dict[str, Any]) -> None:
        """The schema language must be known before the thread starts (400 otherwise)."""
        schema = params.get("schema")
        schema_kind(schema.filename if isinstance(schema, Upload) else None,
                    params.get("schema-type"))


@job(
    "validate",
    spec=ValidateJob,
    params={
        "documents": DOCUMENTS,
        "schema": File(doc="the schema: .xsd, .rng, .rnc, .sch or .dtd; none to validate "
                           "against each document's internal DTD subset"),
        "schema-type": Choice(choices=KINDS, doc="the schema language, when the schema's "
                                                 "file name does not tell"),
    },
    title="Validation thread",
)
async def validate(ctx: Context) -> None:
    """Validate XML documents (files or zips) against an XSD, RELAX NG (XML or compact),
    ISO Schematron or DTD schema, or each document's internal DTD subset."""
    schemas = ctx.files("schema")
    schema = schemas[0] if schemas else None
    kind = schema_kind(schema.name if schema else None, ctx.params.get("schema-type"))
    documents = await ctx.run_sync(DocumentSet, ctx.files("documents"))  # UnsafeUpload fails it
    if len(documents) == 0:
        raise NoDocuments("No documents to validate: the upload holds no files")
    data = await ctx.run_sync(schema.path.read_bytes) if schema else None
    validator = await ctx.run_sync(compile_schema, kind, data, schema.name if schema else "")
    total = len(documents)
    await ctx.progress(0, total)
    with tempfile.TemporaryFile() as spool:
        valid = await ctx.run_sync(_validate_all, ctx, documents, validator, spool)
        ctx.check_cancelled()
        invalid = total - valid
        await ctx.message(
            f"Validated {total} document{'s' if total != 1 else ''}: {valid} valid, {invalid} invalid"
        )
        spool.seek(0)
        async with ctx.result_file(REPORT_NAME, "application/xml") as out:
            await ctx.run_sync(
                lambda: write_report(out, _spooled(spool), total=total, valid=valid,
                                     schema=schema.name if schema else None, kind=kind)
            )


def _validate_all(ctx: Context, documents: DocumentSet, validator: Validator, spool: IO[bytes]
                  ) -> int:
    """In a worker thread: each document in turn, reported as it is done; the number valid."""
    total = len(documents)
    valid = 0
    for index, (entry, data) in enumerate(documents, 1):
        ctx.check_cancelled()
        findings = validator.check(data)
        del data
        ctx.check_cancelled()
        report = DocumentReport(entry.path, tuple(findings))
        for finding in findings:
            text = (f"Document {entry.path}, line {finding.line}, column {finding.column}: "
                    f"{finding.text}")
            if finding.level == "error":
                ctx.sync.error(text)
            else:
                ctx.sync.warning(text)
        if report.valid:
            valid += 1
            ctx.sync.message(f"Document {entry.path} is valid.")
        spool.write(json.dumps([entry.path, [astuple(f) for f in findings]]).encode() + b"\n")
        ctx.sync.progress(index, total)
    return valid


def _spooled(spool: IO[bytes]) -> Iterator[DocumentReport]:
    for line in spool:
        path, findings = json.loads(line)
        yield DocumentReport(path, tuple(Finding(*item) for item in findings))
