"""Schemathesis against a real server, driven by the server's own /ps/service/openapi.json.

Each credentials profile (a role; HTTP Basic or Bearer; XML or JSON) gets a fresh server whose
store holds the standard world plus threads in every state and webhooks (tests/fuzz/checks.py).
Generated `{id}`, `{group}` and `{token}` values are swapped half of the time for those real
ones, so the fuzzer gets past the 404s. For each operation and profile:

- `test_generated`: `THREADSVC_FUZZ_EXAMPLES` cases (default 30), positive and negative
  (schema-violating) data, from derandomized Hypothesis: a CI run is reproducible;
- `test_coverage`: schemathesis's coverage cases (boundary values, each parameter missing or of
  the wrong type, unexpected methods), a fixed list.

Checks: schemathesis's own (no 5xx, status codes, content types and headers the description
lists, JSON bodies against their schemas, credentials enforced, 405s with `Allow`) and ours:
every 4xx is an error document with the id docs/api.md#errors gives its status, every XML body is valid
against its published XSD (tests/fuzz/checks.py).

Long form: `THREADSVC_FUZZ_EXAMPLES=1000 pytest tests/fuzz` (docs/reliability.md).
Schemathesis's pytest plugin (`schemathesis.pytest.from_fixture`) is not used: this one drives
its Python API (`APIOperation.as_strategy`, `Case.call_and_validate`) from plain Hypothesis.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from tests.fuzz.checks import KNOWN, Seeded, Sent, check_answer, known_bug, seed_world
from tests.support import password, running_server

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("THREADSVC_FUZZ_EXAMPLES", "30"))

# name -> (user or None, "basic" | "bearer", Accept)
PROFILES: dict[str, tuple[str | None, str, str | None]] = {
    "admin-bearer": ("admin", "bearer", None),
    "admin-basic-json": ("admin", "basic", "application/json"),
    "approver-basic": ("approver", "basic", None),
    "manager-basic": ("manager", "basic", None),
    "contributor-bearer-json": ("contributor", "bearer", "application/json"),
    "reviewer-basic": ("reviewer", "basic", None),
    "othermgr-bearer": ("othermgr", "bearer", None),
    "outsider-basic": ("outsider", "basic", None),
    "anonymous": (None, "none", None),
}

SERVER_SETTINGS: dict[str, Any] = {
    "max-running": 64,
    # The run sends bad credentials on purpose (the ignored_auth check); lockout is tested elsewhere.
    "lockout-attempts": 1_000_000,
    # Webhook URLs are registered without DNS look-ups (none in CI) and delivered nowhere.
    "webhook-allow-private": True,
    "max-upload": 1_000_000,
}


def _packaged() -> Any:
    return schemathesis.openapi.from_path(
        str(resources.files("threadsvc") / "schemas" / "openapi.json")
    )


def _operations() -> list[str]:
    """Every operation's label; the ones that change or destroy the seeded things last."""
    labels = [result.ok().label for result in _packaged().get_all_operations()]

    def rank(label: str) -> int:
        return 2 if label.startswith("DELETE") else 1 if label.endswith("/cancel") else 0

    return sorted(labels, key=rank)


OPERATIONS = _operations()


def _config(base_url: str, auth: dict[str, Any], headers: dict[str, str]) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            **({"auth": auth} if auth else {}),
            **({"headers": headers} if headers else {}),
            "request-timeout": 15,
            "max-stream-events": 3,
            "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "ignored_auth": {"enabled": True},
                "unsupported_method": {"enabled": True},
                "allow_header_conformance": {"enabled": True},
                # Not for this API: a job's parameters are the job's business, not the
                # description's, so schema-valid data may well be refused (and a bad thread id
                # given to cancel is an empty <thread-cancel/>, as in PageSeeder).
                "positive_data_acceptance": {"enabled": False},
                "negative_data_rejection": {"enabled": False},
                "missing_required_header": {"enabled": False},
                "use_after_free": {"enabled": False},
                "ensure_resource_availability": {"enabled": False},
            },
        }
    )


def _credentials(tokens: dict[str, str], profile: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The schemathesis `auth` table and the extra headers of a profile."""
    user, scheme, accept = PROFILES[profile]
    auth: dict[str, Any] = {}
    if user is not None and scheme == "bearer":
        auth = {"openapi": {"bearerAuth": {"bearer": tokens[user]}}}
    elif user is not None:
        auth = {"openapi": {"basicAuth": {"username": user, "password": password(user)}}}
    return auth, ({"Accept": accept} if accept is not None else {})


def _tolerate_known_bugs(schema: Any) -> None:
    """Schemathesis's own checks (a 5xx, say) pass over an answer that shows a known bug."""

    @schema.hook  # type: ignore[untyped-decorator]
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        bug = known_bug(_sent(response), response.status_code)
        if bug is not None:
            KNOWN[bug] += 1
        return bug is None


def _real_values(schema: Any, seeded: Seeded) -> None:
    """Half of the time, generated path parameters become ids of things that exist."""

    @schema.hook  # type: ignore[untyped-decorator]
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        path = context.operation.path if context.operation is not None else ""
        if not path_parameters:
            return st.just(path_parameters)
        choices: dict[str, list[str]] = {}
        if "id" in path_parameters:
            choices["id"] = seeded.webhooks if "/webhooks" in path else seeded.thread_ids
        if "group" in path_parameters:
            choices["group"] = ["dev", "240", "other"]
        if "token" in path_parameters:
            choices["token"] = seeded.tokens
        if not choices:
            return st.just(path_parameters)
        real = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in choices.items()})
        return st.one_of(
            st.just(path_parameters), real.map(lambda values: {**path_parameters, **values})
        )


@pytest.fixture(scope="module", params=list(PROFILES))
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A fresh seeded server for one profile, and the schema it serves, set up to call it."""
    directory = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    for server, tokens in running_server(directory, **SERVER_SETTINGS):
        seeded = seed_world(server)
        config = _config(server.url, *_credentials(tokens, request.param))
        schema = schemathesis.openapi.from_url(
            f"{server.url}/ps/service/openapi.json", config=config
        )
        _real_values(schema, seeded)
        _tolerate_known_bugs(schema)
        yield schema


def _sent(response: Any) -> Sent:
    request = response.request  # a requests.PreparedRequest
    body = request.body or b""
    return Sent(
        str(request.method),
        str(request.path_url),
        dict(request.headers),
        body.encode() if isinstance(body, str) else bytes(body),
    )


def threadsvc_documents(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx is an error document with the right id; every XML body is valid (checks.py)."""
    sent = _sent(response)
    check_answer(
        sent.method,
        sent.target,
        response.status_code,
        {k: ", ".join(v) if isinstance(v, list) else v for k, v in response.headers.items()},
        response.content or b"",
        json_asked="json" in str(sent.headers.get("Accept", "")).lower(),
        sent=sent,
    )


def _operation(schema: Any, label: str) -> Any:
    method, path = label.split(" ", 1)
    return schema[path][method]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", OPERATIONS)
def test_generated(api_schema: Any, label: str) -> None:
    operation = _operation(api_schema, label)
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def fuzz(case: Any) -> None:
        case.call_and_validate(additional_checks=[threadsvc_documents])

    fuzz()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", OPERATIONS)
def test_coverage(api_schema: Any, label: str) -> None:
    operation = _operation(api_schema, label)
    generation = api_schema.config.generation_for(operation=operation)
    failures: list[str] = []
    count = 0
    for case in api_schema.iter_coverage_cases(
        operation, generation_modes=list(GenerationMode), generation_config=generation
    ):
        count += 1
        try:
            case.call_and_validate(additional_checks=[threadsvc_documents])
        except (FailureGroup, AssertionError) as exc:
            failures.append(f"{case.as_curl_command()}\n{exc}")
    assert not failures, f"{len(failures)} of {count} coverage cases failed:\n\n" + "\n\n".join(
        failures[:20]
    )
