"""Hypothesis against a real server: whatever a client sends, the answer is below 500 and every
error is an error document (docs/api.md#formats, #errors; the checks are in tests/fuzz/checks.py).

One server for the module, seeded with threads in every state (tests/fuzz/checks.py). Each
property sends `INPUTS` requests (5 × THREADSVC_FUZZ_EXAMPLES, so 150 by default) from
derandomized Hypothesis: a CI run is reproducible, and THREADSVC_FUZZ_EXAMPLES=1000 is the long
form (docs/reliability.md). A start that the server accepts (202) is cancelled at once, so the
run does not pile up work.
"""

from __future__ import annotations

import base64
import os
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.fuzz.checks import ANSWERS, GROUP, Seeded, Sent, check_answer, json_asked, seed_world
from tests.support import Server, running_server

EXAMPLES = int(os.environ.get("THREADSVC_FUZZ_EXAMPLES", "30"))
INPUTS = 5 * EXAMPLES

fuzz_settings = settings(
    max_examples=INPUTS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(max(300, INPUTS * 3))]


@pytest.fixture(scope="module")
def fuzz_world(
    tmp_path_factory: pytest.TempPathFactory, new_store: Any
) -> Iterator[tuple[Server, dict[str, str], Seeded]]:
    """The module's server, once on each store (tests/conftest.py `new_store`)."""
    directory = tmp_path_factory.mktemp("fuzz-inputs")
    settings_ = {
        "db": new_store(directory),
        "max-running": 64,
        "max-upload": 200_000,
        "max-active-per-user": 100_000,
        "max-active-per-group": 100_000,
    }
    for server, tokens in running_server(directory, **settings_):
        yield server, tokens, seed_world(server, webhooks=False)


@pytest.fixture(scope="module")
def http(fuzz_world: tuple[Server, dict[str, str], Seeded]) -> Iterator[httpx.Client]:
    """A client without credentials of its own: each request says who it is."""
    server = fuzz_world[0]
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def bearer(fuzz_world: tuple[Server, dict[str, str], Seeded]) -> dict[str, str]:
    """`Authorization` headers by user (API tokens: garbage Basic credentials sent elsewhere in
    this module may lock a username, never a token)."""
    return {user: f"Bearer {token}" for user, token in fuzz_world[1].items()}


@pytest.fixture(scope="module")
def seeded(fuzz_world: tuple[Server, dict[str, str], Seeded]) -> Seeded:
    return fuzz_world[2]


def send(http: httpx.Client, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
    """Send, check the answer (checks.check_answer), cancel a thread that was started."""
    request = http.build_request(method, url, **kwargs)
    request.read()  # a multipart body too, so that `Sent` can hold it
    try:
        response = http.send(request)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # The server closes a connection after a 500 (Starlette re-raises to uvicorn), so the
        # next request on that keep-alive connection fails: send it again, on a new one.
        response = http.send(request)
    path = request.url.raw_path.decode("ascii")
    sent = Sent(method, path, request.headers, request.content)
    check_answer(
        method,
        path,
        response.status_code,
        response.headers,
        response.content,
        json_asked(path, request.headers),
        sent,
    )
    if response.status_code == 202 and method == "POST":
        progress = response.headers.get("content-location")
        if progress:
            http.post(
                progress.removesuffix("/progress") + "/cancel",
                headers={"Authorization": request.headers.get("authorization", "")},
            )
    return response


# -- strategies ------------------------------------------------------------------------------------
# Text that httpx can send in a form or a URL: anything but lone surrogates.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
# Header value bytes that HTTP/1.1 (h11) lets a client send: HTAB, SP, VCHAR and obs-text.
header_bytes = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")
)
JOBS = ("sleep", "validate", "transform", "command", "purge", "Sleep", " sleep", "")
SLEEP_PARAMS = ("seconds", "steps", "warn", "error", "fail", "result", "job")
numberish = st.one_of(
    st.sampled_from(
        [
            "0",
            "0.01",
            "1",
            "-1",
            "nan",
            "inf",
            "-0",
            "1e3",
            "3601",
            "10001",
            "0x10",
            "1_0",
            " 1",
            "1 ",
            "",
            "²",
            "١",
            "1.5",
            "99999999999999999999",
            "\x00",
            "1\x00",
            "\u0663",
        ]
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    any_text,
)


def small_sleep(draw: Any) -> dict[str, str]:
    """Sleep fields that mostly make sense (so some starts succeed) and sometimes do not."""
    fields = {"job": "sleep", "seconds": draw(st.sampled_from(["0", "0.01", "0.2"]))}
    for name in draw(st.lists(st.sampled_from(SLEEP_PARAMS[1:-1]), max_size=3, unique=True)):
        fields[name] = draw(numberish)
    return fields


@st.composite
def form_fields(draw: Any) -> list[tuple[str, str]]:
    fields = list(small_sleep(draw).items()) if draw(st.booleans()) else []
    names = st.one_of(st.sampled_from(SLEEP_PARAMS), any_text)
    values = st.one_of(st.sampled_from(JOBS), numberish, any_text)
    fields += draw(st.lists(st.tuples(names, values), max_size=6))
    shuffled: list[tuple[str, str]] = draw(st.permutations(fields))
    return shuffled


def _xml_name(draw: Any) -> str:
    return str(
        draw(
            st.one_of(
                st.sampled_from(["job", "param", "jobs", "x:job", "JOB", "p"]),
                st.text(string.ascii_letters + "-_.:0123456789", min_size=1, max_size=8),
            )
        )
    )


def _xml_text(draw: Any) -> str:
    text = str(draw(st.one_of(st.sampled_from(["0", "0.01", "sleep", "", " "]), any_text)))
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        if draw(st.booleans())
        else text
    )


@st.composite
def xml_bodies(draw: Any) -> bytes:
    """Mostly well-formed `<job>` documents, often with something wrong with them: odd names,
    attributes, children, entities, a DOCTYPE, CDATA, comments, PIs, encodings, deep nesting."""
    root = (
        draw(st.sampled_from(["job", "job", "job", "param", "x:job"]))
        if draw(st.booleans())
        else _xml_name(draw)
    )
    attrs = ""
    if draw(st.integers(0, 4)):
        attrs += (
            f' name="{draw(st.sampled_from(JOBS)) if draw(st.booleans()) else _xml_text(draw)}"'
        )
    for _ in range(draw(st.integers(0, 2))):
        attrs += f' {_xml_name(draw)}="{_xml_text(draw)}"'
    children = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            name = draw(st.sampled_from(SLEEP_PARAMS)) if draw(st.booleans()) else _xml_text(draw)
            value = draw(numberish) if draw(st.booleans()) else _xml_text(draw)
            if draw(st.booleans()):
                children.append(f'<param name="{name}" value="{value}"/>')
            else:
                children.append(f'<param name="{name}">{value}</param>')
        elif kind == 6:
            children.append(f"<{_xml_name(draw)}>{_xml_text(draw)}</{_xml_name(draw)}>")
        elif kind == 7:
            children.append(
                draw(
                    st.sampled_from(
                        [
                            "<![CDATA[x]]>",
                            "<!-- c -->",
                            "<?pi x?>",
                            "&amp;",
                            "&lt;",
                            "&#0;",
                            "&#x10FFFF;",
                            "&bogus;",
                            "&#65;",
                            "<param/>",
                            "<param name=''/>",
                            "</job>",
                            "<",
                            "]]>",
                        ]
                    )
                )
            )
        elif kind == 8:
            depth = draw(st.integers(1, 400))
            children.append("<a>" * depth + "</a>" * depth)
        else:
            children.append(_xml_text(draw))
    body = f"<{root}{attrs}>{''.join(children)}</{root}>"
    prolog = draw(
        st.sampled_from(
            [
                "",
                "",
                "<?xml version='1.0'?>",
                '<?xml version="1.0" encoding="utf-8"?>',
                '<?xml version="1.0" encoding="latin-1"?>',
                '<?xml version="1.1"?>',
                '<?xml version="1.0" encoding="utf-16"?>',
                '<?xml version="2.0"?>',
                '<!DOCTYPE job [<!ENTITY e "sleep">]>',
                '<!DOCTYPE job SYSTEM "file:///etc/passwd">',
                "\ufeff",
                " ",
            ]
        )
    )
    text = str(prolog) + body
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
    data: bytes = text.encode(str(encoding), errors="replace")
    if draw(st.integers(0, 9)) == 0:  # truncated
        data = data[: draw(st.integers(0, len(data)))]
    return data


# -- start bodies ---------------------------------------------------------------------------------
@fuzz_settings
@given(
    body=st.binary(max_size=3000),
    content_type=st.sampled_from(
        [
            "application/xml",
            "text/xml",
            "application/xml; charset=utf-8",
            "application/xml;charset=latin-1",
        ]
    ),
)
def test_arbitrary_bytes_as_an_xml_start_body(
    http: httpx.Client, bearer: dict[str, str], body: bytes, content_type: str
) -> None:
    send(
        http,
        "POST",
        f"{GROUP}/threads",
        content=body,
        headers={"Authorization": bearer["contributor"], "Content-Type": content_type},
    )


@fuzz_settings
@given(
    body=xml_bodies(),
    where=st.sampled_from([f"{GROUP}/threads", "/ps/service/threads"]),
    accept=st.sampled_from([None, "application/json"]),
)
def test_xml_start_bodies(
    http: httpx.Client, bearer: dict[str, str], body: bytes, where: str, accept: str | None
) -> None:
    headers = {
        "Authorization": bearer[
            "admin" if where.startswith("/ps/service/threads") else "contributor"
        ],
        "Content-Type": "application/xml",
    }
    if accept:
        headers["Accept"] = accept
    send(http, "POST", where, content=body, headers=headers)


# -- start forms ----------------------------------------------------------------------------------
@fuzz_settings
@given(
    fields=form_fields(),
    multipart=st.booleans(),
    user=st.sampled_from(["contributor", "contributor", "reviewer", "manager", "outsider"]),
)
def test_form_fields_to_start(
    http: httpx.Client,
    bearer: dict[str, str],
    fields: list[tuple[str, str]],
    multipart: bool,
    user: str,
) -> None:
    headers = {"Authorization": bearer[user]}
    if multipart:
        # Field names go into the part headers; a file part now and then.
        files: list[tuple[str, Any]] = [(name, (None, value)) for name, value in fields]
        if fields and len(fields) % 3 == 0:
            files.append((fields[0][0], ("f.xml", fields[-1][1].encode(), "application/xml")))
        if not files:
            files = [("job", (None, "sleep"))]
        send(http, "POST", f"{GROUP}/threads", files=files, headers=headers)
    else:
        body = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in fields)
        send(
            http,
            "POST",
            f"{GROUP}/threads",
            content=body.encode(),
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )


@fuzz_settings
@given(
    body=st.binary(max_size=2000),
    content_type=st.one_of(
        st.sampled_from(
            [
                "multipart/form-data",
                "multipart/form-data; boundary=x",
                "multipart/form-data; boundary=",
                "application/x-www-form-urlencoded",
                "multipart/mixed; boundary=x",
                "application/json",
                "text/plain",
                "",
            ]
        ),
        header_bytes,
    ),
)
def test_arbitrary_bytes_as_a_form(
    http: httpx.Client, bearer: dict[str, str], body: bytes, content_type: bytes | str
) -> None:
    send(
        http,
        "POST",
        f"{GROUP}/threads",
        content=body,
        headers={"Authorization": bearer["contributor"], "Content-Type": content_type},
    )


# -- query strings --------------------------------------------------------------------------------
QUERY_NAMES = {
    "list": ("status", "username", "type", "since", "until", "deletion-before", "page", "pagesize"),
    "logs": ("since", "limit", "level"),
    "progress": ("wait",),
}
query_value = st.one_of(
    numberish,
    st.sampled_from(
        [
            "active",
            "finished",
            "all",
            "completed,failed",
            "ERROR",
            "warning",
            "debug",
            "2026-11-22T08:00:00.123Z",
            "2026-11-22",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "2026-02-30T00:00:00Z",
            "T",
            "Z",
            "1795334400000",
            "60",
            "61",
            "1",
            "0",
            "1000",
            "10000",
            "10001",
            "1001",
            ",",
            "all,",
            "sleep",
        ]
    ),
    any_text,
)


@st.composite
def query_strings(draw: Any, kind: str) -> bytes:
    """A query string for `kind`: its own fields (and others) with odd values, %-encoded, or raw
    garbage."""
    if draw(st.integers(0, 5)) == 0:
        raw: bytes = draw(
            st.binary(max_size=80)
        )  # printable bytes as they are, the others %-encoded
        return "".join(
            chr(c) if 0x21 <= c <= 0x7E and c != 0x23 else f"%{c:02X}" for c in raw
        ).encode()
    own = st.sampled_from(QUERY_NAMES[kind])
    names = st.one_of(
        own, own, own, st.sampled_from([n for v in QUERY_NAMES.values() for n in v]), any_text
    )
    pairs = draw(st.lists(st.tuples(names, query_value), max_size=4))
    parts = []
    for name, value in pairs:
        if draw(st.integers(0, 7)) == 0:
            parts.append(
                quote(name, safe="")
                + "="
                + draw(st.sampled_from(["%", "%zz", "%FF%FE", "%C0%80", "%00"]))
            )
        else:
            parts.append(quote(name, safe="") + "=" + quote(value, safe=""))
    return "&".join(parts).encode()


def _where(seeded: Seeded, kind: str, which: int) -> tuple[str, str]:
    """(path, user) of a list, logs or progress resource."""
    dev = seeded.dev_threads[which % len(seeded.dev_threads)]
    server = seeded.server_threads[which % len(seeded.server_threads)]
    paths = {
        "list": [
            (f"{GROUP}/threads", "contributor"),
            ("/ps/service/threads", "admin"),
            ("/ps/api/groups/dev/threads.json", "contributor"),
        ],
        "logs": [
            (f"{GROUP}/threads/{dev}/logs", "contributor"),
            (f"/ps/service/threads/{server}/logs", "admin"),
            (f"/ps/api/groups/dev/threads/{dev}/logs.json", "manager"),
        ],
        "progress": [
            (f"{GROUP}/threads/{dev}/progress", "reviewer"),
            (f"/ps/service/threads/{server}/progress", "admin"),
            (f"/ps/api/threads/{server}/progress.json", "admin"),
        ],
    }[kind]
    return paths[which % len(paths)]


@fuzz_settings
@given(which=st.integers(0, 20), data=st.data())
@pytest.mark.parametrize("kind", ["list", "logs", "progress"])
def test_query_strings(
    http: httpx.Client, bearer: dict[str, str], seeded: Seeded, kind: str, which: int, data: Any
) -> None:
    path, user = _where(seeded, kind, which)
    query = data.draw(query_strings(kind), label="query")
    url = httpx.URL(http.base_url.join(path), query=query)
    send(http, "GET", url, headers={"Authorization": bearer[user]})


# -- headers --------------------------------------------------------------------------------------
HEADER_NAMES = (
    "Accept",
    "If-None-Match",
    "Prefer",
    "Last-Event-ID",
    "Idempotency-Key",
    "Authorization",
    "Content-Type",
)
header_value = st.one_of(
    header_bytes,
    st.sampled_from(
        [
            b"application/json",
            b"application/json;q=0.5, application/xml",
            b"*/*",
            b"text/plain",
            b"application/json;q=nan",
            b"application/json;q=inf",
            b"application/json;q=1e999",
            b"application/xml;q=-1, application/json",
            b'W/"1"',
            b"*",
            b"wait=1",
            b"wait=0",
            b"wait=99999999999999999999",
            b"respond-async, wait=2",
            b"1:1",
            b"999999999999999:999999999999999",
            b"Basic",
            b"Basic ",
            b"Basic !!!",
            b"Basic Og==",
            b"Basic YTo=",
            b"Basic \xff\xfe",
            b"Bearer",
            b"Bearer  ",
            b"Bearer \xff",
            b"Digest x",
            b"multipart/form-data",
            b"application/xml; charset=bogus",
        ]
    ),
    st.tuples(st.sampled_from([b"Basic ", b"Bearer ", b""]), st.binary(max_size=40)).map(
        lambda t: t[0] + base64.b64encode(t[1])
    ),
    # Basic credentials that decode well: odd usernames and passwords (never a real user's
    # password, so no lockout of the users the properties act as).
    st.tuples(
        st.one_of(st.sampled_from(["admin", "nobody", "a\x00b", ""]), any_text), any_text
    ).map(lambda t: b"Basic " + base64.b64encode(f"{t[0]}:{t[1]}".encode())),
).map(lambda value: value.strip(b" \t"))


@st.composite
def header_sets(draw: Any) -> dict[str, bytes]:
    names = draw(st.lists(st.sampled_from(HEADER_NAMES), min_size=1, max_size=4, unique=True))
    return {name: draw(header_value) for name in names}


@fuzz_settings
@given(headers=header_sets(), target=st.integers(0, 9), which=st.integers(0, 20))
def test_header_values(
    http: httpx.Client,
    bearer: dict[str, str],
    seeded: Seeded,
    headers: dict[str, bytes],
    target: int,
    which: int,
) -> None:
    dev = seeded.dev_threads[which % (len(seeded.dev_threads) - 1)]  # not the running one
    method, path, kwargs = [
        ("GET", f"{GROUP}/threads", {}),
        ("GET", f"{GROUP}/threads/{dev}", {}),
        ("GET", f"{GROUP}/threads/{dev}/progress", {}),
        ("GET", f"{GROUP}/threads/{dev}/logs", {}),
        ("GET", f"{GROUP}/threads/{dev}/events", {}),
        ("GET", f"{GROUP}/threads/{dev}/result", {}),
        ("POST", f"{GROUP}/threads", {"content": b"job=sleep&seconds=0"}),
        (
            "POST",
            f"{GROUP}/threads",
            {"content": b'<job name="sleep"><param name="seconds">0</param></job>'},
        ),
        ("POST", f"{GROUP}/threads/{dev}/cancel", {}),
        ("GET", "/ps/service/groups/dev/webhooks", {}),
    ][target]
    sent = {"Authorization": bearer["manager"].encode()}
    if method == "POST" and "content" in kwargs:
        sent["Content-Type"] = (
            b"application/xml"
            if kwargs["content"].startswith(b"<")
            else b"application/x-www-form-urlencoded"
        )
    sent.update(headers)
    send(http, method, path, headers=sent, **kwargs)


# -- path segments --------------------------------------------------------------------------------
segment = st.one_of(
    any_text.map(lambda s: quote(s, safe="")),
    st.binary(min_size=1, max_size=20).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.sampled_from(
        [
            "dev",
            "240",
            "0",
            "-1",
            "241",
            "other",
            "DEV",
            "dev.",
            ".",
            "..",
            "%2e%2e",
            "%2F",
            "a%2Fb",
            "dev%00",
            "%",
            "%zz",
            "99999999999999999999999",
            "1e3",
            "00240",
            "+240",
            " 240",
            "%20",
        ]
    ),
)
TEMPLATES = (
    "/ps/service/groups/{group}/threads",
    "/ps/service/groups/{group}/threads/{id}",
    "/ps/service/groups/{group}/threads/{id}/progress",
    "/ps/service/groups/{group}/threads/{id}/logs",
    "/ps/service/groups/{group}/threads/{id}/result",
    "/ps/service/groups/{group}/threads/{id}/events",
    "/ps/service/groups/{group}/threads/{id}/cancel",
    "/ps/service/groups/{group}/webhooks",
    "/ps/service/groups/{group}/webhooks/{id}",
    "/ps/service/threads/{id}",
    "/ps/service/threads/{id}/progress",
    "/ps/service/threads/{id}/logs",
    "/ps/service/threads/{id}/result",
    "/ps/service/webhooks/{id}",
    "/ps/service/results/{id}",
    "/ps/api/groups/{group}/threads/{id}.json",
    "/ps/api/groups/{group}/threads.json",
    "/ps/api/threads/{id}/progress.xml",
)


@fuzz_settings
@given(
    template=st.sampled_from(TEMPLATES),
    group=segment,
    thread=st.one_of(segment, st.just("REAL")),
    which=st.integers(0, 20),
    user=st.sampled_from(["admin", "contributor", "othermgr"]),
    method=st.sampled_from(["GET", "GET", "POST", "DELETE"]),
)
def test_path_segments(
    http: httpx.Client,
    bearer: dict[str, str],
    seeded: Seeded,
    template: str,
    group: str,
    thread: str,
    which: int,
    user: str,
    method: str,
) -> None:
    if thread == "REAL":
        ids = seeded.thread_ids
        thread = ids[which % len(ids)]
    if method == "DELETE" and thread in seeded.thread_ids:
        method = "GET"  # keep the seeded threads for the other examples
    path = template.replace("{group}", group).replace("{id}", thread)
    url = httpx.URL(http.base_url.join("/"), raw_path=path.encode("ascii"))
    send(http, method, url, headers={"Authorization": bearer[user]})


def test_the_checks_catch_a_bad_error_document() -> None:
    """The property's own check refuses what it should (a guard against a vacuous property)."""
    counted = ANSWERS.copy()
    good = (
        b"<?xml version='1.0' encoding='utf-8'?>\n"
        b'<error id="0201"><request>/x</request><message>Bad</message></error>'
    )
    check_answer("GET", "/x", 400, {"Content-Type": "application/xml;charset=utf-8"}, good, False)
    bad_cases = [
        (500, "application/xml;charset=utf-8", good),
        (400, "application/xml; charset=utf-8", good),
        (400, "text/plain", b"Bad"),
        (
            400,
            "application/xml;charset=utf-8",
            good.replace(b"<message>Bad</message>", b"<message/>"),
        ),
        (404, "application/xml;charset=utf-8", good),
        (400, "application/json;charset=utf-8", b'{"error": {"id": "0201"}}'),
    ]
    for status, content_type, body in bad_cases:
        with pytest.raises(AssertionError):
            check_answer("GET", "/x", status, {"Content-Type": content_type}, body, True)
    etree.fromstring(good)
    ANSWERS.clear()
    ANSWERS.update(counted)
