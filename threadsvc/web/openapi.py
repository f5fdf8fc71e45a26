"""/ps/service/openapi.json, made once at start-up: the template `schemas/openapi.json` with
the registered jobs filled in.

The template holds every part that does not depend on the jobs (paths, answers, errors,
credentials). For each registered job, built-in or installed, this adds a form component
(`SleepForm` for `sleep`) made from its declared parameters, and a `<job name="...">` body
component; `JobForm` and `JobXML` become the choice between them, keyed by the job's name. A
template component of the same form name adds what declarations cannot say (the `command`
job's `name`, the `transform` job's `param.NAME` fields); a declared parameter always wins.

Threat model: job names, titles and docs come from code an administrator installed, not from
callers; they only become JSON strings (escaped by `json.dumps`), and component names keep
only their ASCII letters and digits. Nothing here reads a request.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from threadsvc.runner.params import Described, describe
from threadsvc.runner.registry import JobSpec

Schema = dict[str, Any]
REF = "#/components/schemas/"


def template() -> Schema:
    """The packaged template: a valid description of its own, for the built-in jobs."""
    loaded: Schema = json.loads((resources.files("threadsvc") / "schemas" / "openapi.json")
                                .read_bytes())
    return loaded


def generate(specs: Iterable[JobSpec]) -> bytes:
    """The document served at /ps/service/openapi.json for a server with these jobs."""
    return json.dumps(describe_jobs(template(), specs), ensure_ascii=False).encode()


def describe_jobs(document: Schema, specs: Iterable[JobSpec]) -> Schema:
    """`document` (the template) with the forms and bodies of `specs`; `document` is not changed."""
    out = copy.deepcopy(document)
    schemas: Schema = out["components"]["schemas"]
    forms: dict[str, str] = {}
    bodies: dict[str, str] = {}
    # A template form a job may be written over (once), by its name: not JobForm itself.
    mergeable = {name for name in schemas if name.endswith("Form") and name != "JobForm"}
    for spec in specs:
        base = component_name(spec.name, set(schemas), mergeable)
        mergeable.discard(base + "Form")
        forms[spec.name] = REF + base + "Form"
        bodies[spec.name] = REF + base + "XML"
        schemas[base + "Form"] = _form(spec, schemas.get(base + "Form"))
        schemas[base + "XML"] = _body(spec)
    for name, refs, key in (("JobForm", forms, "job"), ("JobXML", bodies, "name")):
        schemas[name] = {
            **{k: v for k, v in schemas[name].items() if k not in ("oneOf", "discriminator")},
            "oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": key, "mapping": refs},
        }
        schemas[name].pop("properties", None)
        schemas[name].pop("required", None)
        schemas[name].pop("type", None)
    return out


def component_name(job: str, taken: set[str], mergeable: set[str]) -> str:
    """`big-result` -> `BigResult`: ASCII letters and digits only, and neither `NAMEForm` nor
    `NAMEXML` taken (but for a template form in `mergeable`)."""
    base = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", job))
    base = base or "Job"
    name, n = base, 1
    while (name + "Form" in taken and name + "Form" not in mergeable) or name + "XML" in taken:
        n += 1
        name = f"{base}{n}"
    return name


def takes_undeclared_fields(spec: JobSpec) -> bool:
    """A job that parses its fields its own way may take fields it does not declare."""
    return type(spec).parse_params is not JobSpec.parse_params


def _form(spec: JobSpec, given: Schema | None) -> Schema:
    """The job's form: its declared parameters over the template's component, if any."""
    given = given or {}
    properties: Schema = {"job": {"type": "string", "enum": [spec.name]}}
    required = ["job"]
    for name, param in spec.params.items():
        described = describe(param)
        properties[name] = _field(described)
        if described.required:
            required.append(name)
    extra = {"type": "string"} if takes_undeclared_fields(spec) else False
    return {
        "type": "object",
        "description": _about(spec),
        **{k: v for k, v in given.items() if k not in ("properties", "required")},
        "required": [*required, *(r for r in given.get("required", []) if r not in required)],
        "properties": {**given.get("properties", {}), **properties},
        "additionalProperties": given.get("additionalProperties", extra),
    }


def _about(spec: JobSpec) -> str:
    where = {"group": "in a group", "server": "at server level",
             "both": "in a group or at server level"}[spec.scope.value]
    said = spec.description or spec.title or f"The `{spec.name}` job."
    return f"{said}\n\nThe `{spec.name}` job runs {where}; least role in a group: {spec.role.label}."


def _field(param: Described) -> Schema:
    """One form field; a repeated one is an array of its values."""
    if param.type == "file":
        one: Schema = {"type": "string", "format": "binary"}
    elif param.type in ("integer", "number"):
        one = {"type": param.type}
        if param.minimum is not None:
            one["minimum"] = param.minimum
        if param.maximum is not None:
            one["maximum"] = param.maximum
    elif param.type == "choice":
        one = {"type": "string", "enum": list(param.choices or ())}
    elif param.type == "boolean":
        one = {"type": "boolean"}
    else:
        one = {"type": "string"}
        if param.max_length is not None:
            one["maxLength"] = param.max_length
    doc = param.doc
    if param.pattern is not None:
        # Said, not given as `pattern`: a Python expression is not always an ECMA one.
        doc = f"{doc} (the whole value must match `{param.pattern}`)".strip()
    field: Schema = {"type": "array", "items": one} if param.multiple else one
    if param.multiple and param.required:
        field["minItems"] = 1
    if param.default is not None and not param.multiple:
        field["default"] = param.default
    if doc:
        field["description"] = doc
    return field


def _body(spec: JobSpec) -> Schema:
    """The `<job name="...">` body of the job: its text parameters as `<param>` children
    (files come only in a multipart form)."""
    names = [n for n, p in spec.params.items() if describe(p).type != "file"]
    param: Schema = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "xml": {"attribute": True}},
            "value": {"type": "string", "xml": {"attribute": True}},
        },
        "xml": {"name": "param"},
    }
    if not takes_undeclared_fields(spec):
        param["properties"]["name"]["enum"] = names
    body: Schema = {
        "type": "object",
        "description": f'`<job name="{spec.name}">` with a `<param name="...">` per parameter.',
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "enum": [spec.name], "xml": {"attribute": True}},
            "param": {"type": "array", "items": param},
        },
        "xml": {"name": "job"},
    }
    if not names and not takes_undeclared_fields(spec):
        body["properties"]["param"]["maxItems"] = 0
        param["properties"]["name"].pop("enum")
    return body
