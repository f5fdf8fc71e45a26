"""Parameter patterns that Unicode would widen, and command output that tries to forge lines
of the text log.

Reported: "command parameter patterns use Unicode `\\d`/`\\w` (Arabic-Indic digits pass
`^\\d+$`)", and "the `text/plain` log keeps CR (and U+0085, U+2028, U+2029), so a job can forge
lines". A real server with declared commands (and a job whose `Text` parameters have
patterns) is sent digits and letters of other scripts, fullwidth forms, the Kelvin sign under
a case-insensitive pattern, and values with a trailing newline: each is a 400 naming the
parameter and nothing starts; ASCII values run. A command writes every line break
str.splitlines() knows and other control characters before a forged `... ERROR ...` line: the
text log has exactly one line an event, each starting with the real time and level.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.hostile.payloads import GROUP, check_error, finish, thread_total
from tests.support import Server, password, running_server
from threadsvc.client import Client

SCRIPTS = Path(__file__).parent.parent / "commands"


def _argv(*items: str) -> str:
    return json.dumps([sys.executable, *items])  # a JSON list is a TOML array


COMMANDS = f"""
[commands.digits]
argv = {_argv(str(SCRIPTS / "argv.py"), "{n}")}
params = {{ n = "^\\\\d+$" }}

[commands.word]
argv = {_argv(str(SCRIPTS / "argv.py"), "{w}")}
params = {{ w = "\\\\w+" }}

[commands.letters]
argv = {_argv(str(SCRIPTS / "argv.py"), "{k}")}
params = {{ k = "(?i)^[a-z]+$" }}

[commands.forge]
argv = {_argv(str(SCRIPTS / "forge.py"))}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("patterns"), config_tail=COMMANDS,
                              **{"jobs": ["tests.hostile.jobs"], "max-running": 16})


NOT_ASCII_DIGITS = [
    "١٢٣",  # Arabic-Indic (the report)
    "۱۲۳",  # extended Arabic-Indic
    "१२३",  # Devanagari
    "１２３",  # fullwidth
    "𝟙𝟚𝟛",  # mathematical
    "12３",  # one of them at the end
    "߁",  # NKo
]
TRAILING = ["123\n", "123\r\n", "123\n\n", "\n123"]


def start(http: httpx.Client, **fields: str) -> httpx.Response:
    return http.post(f"{GROUP}/threads", data=fields)


@pytest.mark.parametrize("value", NOT_ASCII_DIGITS + TRAILING + ["", "12a", "-1"])
def test_digits_of_other_scripts_are_refused(server: Server, value: str) -> None:
    before = thread_total(server)
    with server.client("contributor") as http:
        check_error(start(http, job="command", name="digits", n=value), 400, "0201", "n")
        check_error(start(http, job="patterned", digits=value, word="a"), 400, "0201", "digits")
    assert thread_total(server) == before


@pytest.mark.parametrize(("name", "field", "value"), [
    ("word", "w", "é"), ("word", "w", "straße"), ("word", "w", "ｗｏｒｄ"), ("word", "w", "a\u0301"),
    ("word", "w", "ab\n"), ("letters", "k", "\u212a"),  # the Kelvin sign folds to k in Unicode
    ("letters", "k", "ſ"),  # long s folds to s
    ("letters", "k", "İ"),
])
def test_letters_of_other_scripts_are_refused(server: Server, name: str, field: str,
                                              value: str) -> None:
    assert re.fullmatch("(?i)^[a-z]+$", "\u212a") and re.fullmatch(r"\w+", "é")  # Unicode would
    with server.client("contributor") as http:
        check_error(start(http, job="command", name=name, **{field: value}), 400, "0201", field)
        if name == "letters":
            check_error(start(http, job="patterned", digits="1", word=value), 400, "0201",
                        "word")


def test_ascii_values_still_run(server: Server) -> None:
    with server.client("contributor") as http:
        for name, field, value in (("digits", "n", "0123456789"), ("word", "w", "Ab_9"),
                                   ("letters", "k", "KelVin")):
            answer = start(http, job="command", name=name, **{field: value})
            assert answer.status_code == 202, answer.text
            tid = answer.text.split('id="', 1)[1][:32]
            assert finish(http, tid).get("status") == "completed"
            logs = etree.fromstring(http.get(f"{GROUP}/threads/{tid}/logs").content)
            assert any(json.loads(e.text)["argv"] == [value] for e in logs
                       if (e.text or "").startswith("{")), [e.text for e in logs]
        answer = start(http, job="patterned", digits="42", word="K_2")
        assert answer.status_code == 202, answer.text
        tid = answer.text.split('id="', 1)[1][:32]
        assert finish(http, tid).findtext("message") == "digits=42 word=K_2"


def test_command_output_cannot_forge_text_log_lines(server: Server) -> None:
    with server.client("contributor") as http:
        answer = start(http, job="command", name="forge")
        assert answer.status_code == 202, answer.text
        tid = answer.text.split('id="', 1)[1][:32]
        assert finish(http, tid).get("status") == "completed"
        path = f"{GROUP}/threads/{tid}/logs"
        events = etree.fromstring(http.get(path, params={"limit": 10000}).content)
        texts = [e.text or "" for e in events]
        assert any("\r" in t for t in texts) and any("\u2028" in t for t in texts), texts
        plain = http.get(path, params={"limit": 10000}, headers={"Accept": "text/plain"})
        assert plain.status_code == 200
    lines = plain.text.splitlines()
    assert len(lines) == len(events), lines
    assert plain.text.count("\n") == len(events) and plain.text.endswith("\n")
    for line, event in zip(lines, events, strict=True):
        assert line.startswith(f"{event.get('datetime')} {event.get('level')} "), line
        assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]", line), repr(line)
    forged = [line for line in lines if line.startswith("2026-01-01T00:00:00.000Z")]
    assert not forged, forged
    # `threadsvc threads logs` prints the client's lines: the same, from the XML
    with Client(server.url, username="contributor", password=password("contributor"),
                group="dev") as client:
        assert [entry.line() for entry in client.logs(tid)] == lines
