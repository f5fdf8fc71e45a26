"""The jobs service (docs/api.md#the-jobs-one-may-start) and the generated openapi.json, against a
real server whose `jobs` setting registers tests/jobs_for_tests.py and whose settings declare a
command only managers may run.

Who sees which job comes from the rule the start and the console's form use
(`Service.startable`): each case here is checked against what a start actually answers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import openapi_spec_validator
import pytest
from lxml import etree

from tests.support import GROUP, ROLES, Server, running_server
from threadsvc.models import Role, Scope
from threadsvc.runner.registry import ENTRY_POINT_GROUP, JobSpec
from threadsvc.xml.schemas import validate

SERVER = "/ps/service"
COMMANDS = f"""
[commands.tidy]
argv = [{json.dumps(sys.executable)}, "-c", "print('tidy')"]
role = "manager"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("jobs")
    for server, _ in running_server(directory, config_tail=COMMANDS, **{
        "jobs": ["tests.jobs_for_tests"], "max-running": 8,
    }):
        yield server


def jobs_xml(http: httpx.Client, path: str) -> etree._Element:
    answer = http.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/xml;charset=utf-8"
    validate(answer.content)
    return etree.fromstring(answer.content)


def names(root: etree._Element) -> list[str]:
    return [str(job.get("name")) for job in root.iter("job")]


def error_id(answer: httpx.Response) -> str:
    validate(answer.content)
    return str(etree.fromstring(answer.content).get("id"))


# -- who sees what --------------------------------------------------------------------------------
def _entry_point_jobs() -> list[JobSpec]:
    """The jobs of packages installed beside threadsvc (the example package, in CI)."""
    found: list[JobSpec] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        found += [loaded] if isinstance(loaded, JobSpec) else [
            v for v in vars(loaded).values() if isinstance(v, JobSpec)]
    return found


def _installed(role: Role | None) -> list[str]:
    """The installed group jobs `role` may start (None: an administrator)."""
    return [spec.name for spec in _entry_point_jobs() if spec.scope is not Scope.SERVER
            and (role is None or role >= spec.role)]


def _expected(role: Role | None, names: list[str]) -> list[str]:
    return sorted([*names, *_installed(role)])


EXPECTED_GROUP = {
    "reviewer": _expected(Role.REVIEWER, []),
    "contributor": _expected(Role.CONTRIBUTOR,
                             ["big-result", "checksum", "sleep", "transform", "validate"]),
    "manager": _expected(Role.MANAGER,
                         ["big-result", "checksum", "command", "sleep", "transform", "validate"]),
    "approver": _expected(Role.APPROVER,
                          ["big-result", "checksum", "command", "sleep", "transform", "validate"]),
    "admin": _expected(None,
                       ["big-result", "checksum", "command", "sleep", "transform", "validate"]),
}


@pytest.mark.parametrize("user", [*ROLES, "admin"])
def test_each_member_sees_the_jobs_their_role_may_start(server: Server, user: str) -> None:
    with server.client(user) as http:
        root = jobs_xml(http, f"{GROUP}/jobs")
        assert names(root) == EXPECTED_GROUP[user]
        # Each job listed can be started here, and one not listed cannot (same rule).
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        assert started.status_code == (202 if "sleep" in names(root) else 403), started.text
        tidy = http.post(f"{GROUP}/threads", data={"job": "command", "name": "tidy"})
        assert tidy.status_code == (202 if "command" in names(root) else 403), tidy.text


def test_the_same_list_under_ps_api_and_by_group_id(server: Server) -> None:
    with server.client("contributor") as http:
        expected = names(jobs_xml(http, f"{GROUP}/jobs"))
        assert names(jobs_xml(http, "/ps/api/groups/dev/jobs")) == expected
        assert names(jobs_xml(http, "/ps/service/groups/240/jobs")) == expected
        assert names(jobs_xml(http, "/ps/api/groups/dev/jobs.xml")) == expected
        as_json = http.get("/ps/api/groups/dev/jobs.json")
        assert [job["name"] for job in as_json.json()["jobs"]] == expected


def test_server_level_lists_for_administrators(server: Server) -> None:
    with server.client("admin") as http:
        listed = names(jobs_xml(http, f"{SERVER}/jobs"))
    # Server-level jobs and jobs of both levels; never a group-only one.
    assert listed == ["purge", "sleep"]


@pytest.mark.parametrize("user", [*ROLES, "othermgr", "outsider"])
def test_server_level_is_refused_to_everyone_else(server: Server, user: str) -> None:
    with server.client(user) as http:
        answer = http.get(f"{SERVER}/jobs")
    assert answer.status_code == 403
    assert error_id(answer) == "0101"


@pytest.mark.parametrize("user", ["othermgr", "outsider"])
def test_a_group_refuses_who_is_not_a_member(server: Server, user: str) -> None:
    with server.client(user) as http:
        answer = http.get(f"{GROUP}/jobs")
    assert answer.status_code == 403
    assert error_id(answer) == "0101"


@pytest.mark.parametrize("user", ["admin", "contributor", "outsider"])
def test_an_unknown_group_is_404(server: Server, user: str) -> None:
    with server.client(user) as http:
        answer = http.get(f"{SERVER}/groups/nowhere/jobs")
    assert answer.status_code == 404
    assert error_id(answer) == "0202"


def test_credentials_are_needed(server: Server) -> None:
    with server.client() as anonymous:
        for path in (f"{SERVER}/jobs", f"{GROUP}/jobs"):
            answer = anonymous.get(path)
            assert answer.status_code == 401
            assert error_id(answer) == "0100"
    with server.client("admin") as http:
        answer = http.post(f"{GROUP}/jobs")
        assert answer.status_code == 405
        assert error_id(answer) == "0103"


# -- what is said of each job -----------------------------------------------------------------------
def test_parameters_are_described_fully(server: Server) -> None:
    with server.client("contributor") as http:
        root = jobs_xml(http, f"{GROUP}/jobs")
    jobs = {job.get("name"): job for job in root.iter("job")}
    sleep = jobs["sleep"]
    assert dict(sleep.attrib) == {"name": "sleep", "level": "both", "role": "contributor",
                                  "title": "Sleep thread"}
    params = {p.get("name"): dict(p.attrib) for p in sleep.iter("param")}
    assert list(params) == ["seconds", "steps", "warn", "error", "fail", "result"]
    assert params["seconds"] == {"name": "seconds", "type": "number", "required": "false",
                                 "min": "0", "max": "3600", "default": "1.0"}
    assert params["warn"] == {"name": "warn", "type": "integer", "required": "false",
                              "min": "1", "max": "10000"}  # no default declared: none said
    assert params["result"] == {"name": "result", "type": "text", "required": "false"}
    # The job from the `jobs` setting, and files.
    assert dict(jobs["big-result"].attrib) == {"name": "big-result", "level": "group",
                                               "role": "contributor"}
    checksum = {p.get("name"): dict(p.attrib) for p in jobs["checksum"].iter("param")}
    assert checksum == {
        "files": {"name": "files", "type": "file", "required": "true", "multiple": "true"},
        "label": {"name": "label", "type": "text", "required": "false"},
    }
    validate_params = {p.get("name"): dict(p.attrib) for p in jobs["validate"].iter("param")}
    assert validate_params["schema-type"] == {
        "name": "schema-type", "type": "choice", "required": "false",
        "choices": "xsd,rng,rnc,schematron,dtd",
    }


def test_json_mirrors_the_xml_with_lists_numbers_and_booleans(server: Server) -> None:
    with server.client("contributor", headers={"Accept": "application/json"}) as http:
        answer = http.get(f"{GROUP}/jobs")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json;charset=utf-8"
    jobs = {job["name"]: job for job in answer.json()["jobs"]}
    assert list(jobs) == EXPECTED_GROUP["contributor"]
    seconds = jobs["sleep"]["params"][0]
    assert seconds == {"name": "seconds", "type": "number", "required": False, "min": 0,
                       "max": 3600, "default": 1.0}
    files = jobs["checksum"]["params"][0]
    assert files == {"name": "files", "type": "file", "required": True, "multiple": True}
    choice = next(p for p in jobs["validate"]["params"] if p["name"] == "schema-type")
    assert choice["choices"] == ["xsd", "rng", "rnc", "schematron", "dtd"]


def test_a_member_whose_role_starts_nothing_gets_an_empty_list(server: Server) -> None:
    with server.client("reviewer", headers={"Accept": "application/json"}) as http:
        assert http.get(f"{GROUP}/jobs").json() == {"jobs": []}
    with server.client("reviewer") as http:
        root = jobs_xml(http, f"{GROUP}/jobs")
    assert root.tag == "jobs" and len(root) == 0


# -- messages ---------------------------------------------------------------------------------------
def test_a_job_at_the_wrong_level_is_told_in_plain_words(server: Server) -> None:
    with server.client("admin") as http:
        answer = http.post(f"{SERVER}/threads", data={"job": "validate"})
        assert answer.status_code == 400
        message = etree.fromstring(answer.content).findtext("message")
        assert message == (
            "Parameter 'job' names the job 'validate', which runs in groups only, "
            "not at server level"
        )
        answer = http.post(f"{GROUP}/threads", data={"job": "purge"})
        assert answer.status_code == 400
        message = etree.fromstring(answer.content).findtext("message")
        assert message == ("Parameter 'job' names the job 'purge', which runs at server level "
                           "only, not in a group")


def test_an_integer_out_of_its_bounds_names_both(server: Server) -> None:
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "big-result", "mib": "0"})
    assert answer.status_code == 400
    message = etree.fromstring(answer.content).findtext("message")
    assert message == "Parameter 'mib' must be from 1 to 1024"


# -- openapi.json -----------------------------------------------------------------------------------
def openapi(server: Server) -> dict[str, Any]:
    with server.client() as anonymous:
        answer = anonymous.get("/ps/service/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    loaded: dict[str, Any] = answer.json()
    return loaded


def test_openapi_describes_every_registered_job_and_is_valid(server: Server) -> None:
    doc = openapi(server)
    openapi_spec_validator.validate(doc)
    schemas = doc["components"]["schemas"]
    registered = sorted(["big-result", "checksum", "command", "purge", "sleep", "transform",
                         "validate", *(spec.name for spec in _entry_point_jobs())])
    assert list(schemas["JobForm"]["discriminator"]["mapping"]) == registered
    assert list(schemas["JobXML"]["discriminator"]["mapping"]) == registered
    big = schemas["BigResultForm"]
    assert big["properties"]["job"] == {"type": "string", "enum": ["big-result"]}
    assert big["properties"]["mib"] == {"type": "integer", "minimum": 1, "maximum": 1024,
                                        "default": 1}
    assert big["additionalProperties"] is False
    checksum = schemas["ChecksumForm"]
    assert checksum["required"] == ["job", "files"]
    assert checksum["properties"]["files"] == {
        "type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
    # Fields a declaration cannot say come from the template: command's name, transform's
    # param.NAME fields.
    assert schemas["CommandForm"]["required"] == ["job", "name"]
    assert schemas["TransformForm"]["additionalProperties"]["type"] == "string"
    body = schemas["BigResultXML"]
    assert body["properties"]["name"]["enum"] == ["big-result"]
    assert body["properties"]["param"]["items"]["properties"]["name"]["enum"] == ["mib"]
    for path in ("/ps/service/jobs", "/ps/service/groups/{group}/jobs"):
        assert "200" in doc["paths"][path]["get"]["responses"]


def test_a_job_the_openapi_names_starts_as_it_says(server: Server, tmp_path: Path) -> None:
    """The form the description gives for the job of the `jobs` setting is one the server takes."""
    form = openapi(server)["components"]["schemas"]["BigResultForm"]
    data = {"job": form["properties"]["job"]["enum"][0],
            "mib": str(form["properties"]["mib"]["minimum"])}
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data=data)
    assert answer.status_code == 202, answer.text
