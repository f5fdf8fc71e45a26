"""Extension functions and elements in `transform` stylesheets, sent to a real server.

libxslt gives every stylesheet EXSLT's functions (dyn:evaluate, str:, date:, math:, set:,
exsl:node-set), its own and saxon's; a function is found by its namespace, so the prefix can be
spelt any way XML allows. Reported: `xmlns:é="http://exslt.org/dynamic"` with `é:evaluate(...)`
ran. Each attack here is a stylesheet that, without the check, really calls the extension (the
same stylesheet is compiled in this process with the check off, and its output shows the
call's value); on the server the thread must fail before any document is transformed, with a
message naming the call, and keep no result. Variants: prefixes that are not ASCII or look
odd, declared on any element or re-bound in a nested scope, every kind of expression
(select, test, match, use, xsl:sort, xsl:number, attribute value templates on literal and
XSLT elements), whitespace before the parenthesis, an operator name glued to the prefix,
character references, `xsl:fallback`, the default namespace, extension elements, EXSLT's
`func:function`, a DOCTYPE, a simplified stylesheet, a huge expression, and all of them
started at once. A legitimate stylesheet that calls every XPath 1.0 and XSLT 1.0 function,
with names that look like operators and prefixes, still runs.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from lxml import etree

from tests.hostile.payloads import GROUP, finish, result_bytes, still_serving, thread_logs
from tests.support import Server
from threadsvc.xml.engine import Engine
from threadsvc.xml.stylesheet import StylesheetError

pytestmark = pytest.mark.slow

XSL_NS = "http://www.w3.org/1999/XSL/Transform"
DOCUMENT = b"<doc><n>3</n><n>1</n><n>2</n><title>Alpha</title></doc>"

# (namespace, call with {p} for the prefix, what the output shows when the call runs)
EXTENSIONS = [
    ("http://exslt.org/dynamic", "{p}:evaluate('/doc/title')", "Alpha"),
    ("http://exslt.org/strings", "{p}:concat(/doc/title)", "Alpha"),
    ("http://exslt.org/strings", "{p}:padding(3, 'Z')", "ZZZ"),
    ("http://exslt.org/dates-and-times", "{p}:year('1999-05-05')", "1999"),
    ("http://exslt.org/common", "string({p}:node-set('RAN'))", "RAN"),
    ("http://exslt.org/common", "{p}:object-type(1)", "number"),
    ("http://exslt.org/math", "{p}:power(7, 3)", "343"),
    ("http://exslt.org/sets", "{p}:has-same-node(/, /)", "true"),
    ("http://xmlsoft.org/XSLT/namespace", "string({p}:node-set(/doc/title))", "Alpha"),
    ("http://icl.com/saxon", "{p}:evaluate('/doc/title')", "Alpha"),
    ("http://www.jclark.com/xt", "string({p}:node-set(/doc/title))", "Alpha"),
]
DYNAMIC = EXTENSIONS[0]

# Prefixes: non-ASCII letters, CJK, a combining mark, a titlecase digraph, astral plane,
# '_', '.', '-' and middle dot inside, names starting with "xml", operator and axis names.
PREFIXES = ["é", "中", "e\u0301", "ǅ", "𝒳", "Ωμέγα", "_x", "a.b", "a-b", "x·y", "xmlfoo",
            "XMLbar", "and", "div", "text", "child", "p" * 2000]


def sheet(body: str, declare: str = "", top: str = "", version: str = "1.0") -> bytes:
    return (f'<xsl:stylesheet version="{version}" xmlns:xsl="{XSL_NS}" {declare}>'
            f'<xsl:output method="text"/>{top}{body}</xsl:stylesheet>').encode()


def ns(prefix: str, uri: str) -> str:
    return f'xmlns:{prefix}="{uri}"'


# Each place puts the call (`c`) somewhere a stylesheet evaluates an expression; `d` is the
# namespace declaration.
Place = Callable[[str, str], bytes]
PLACES: dict[str, Place] = {
    "value-of": lambda c, d: sheet(f'<xsl:template match="/"><xsl:value-of select="{c}"/>'
                                   "</xsl:template>", d),
    "declared on the template": lambda c, d: sheet(
        f'<xsl:template match="/" {d}><xsl:value-of select="{c}"/></xsl:template>'),
    "declared on the instruction": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:value-of {d} select="{c}"/></xsl:template>'),
    "re-bound in a nested scope": lambda c, d: sheet(
        f'<xsl:template match="/"><r {d}><xsl:value-of select="{c}"/></r></xsl:template>',
        re.sub(r'"[^"]*"', '"urn:harmless"', d)),
    "literal attribute value template": lambda c, d: sheet(
        f'<xsl:output method="xml"/><xsl:template match="/"><out a="x{{{c}}}y"/>'
        "</xsl:template>", d),
    "xsl:attribute name template": lambda c, d: sheet(
        f'<xsl:template match="/"><e><xsl:attribute name="a{{{c}}}">1</xsl:attribute></e>'
        "</xsl:template>", d),
    "xsl:element namespace template": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:element name="e" namespace="urn:{{{c}}}"/>'
        "</xsl:template>", d),
    "if test": lambda c, d: sheet(
        f"<xsl:template match=\"/\"><xsl:if test=\"{c} != 'x'\">hit</xsl:if>"
        "</xsl:template>", d),
    "choose when": lambda c, d: sheet(
        f"<xsl:template match=\"/\"><xsl:choose><xsl:when test=\"string-length({c}) > 0\">"
        "hit</xsl:when></xsl:choose></xsl:template>", d),
    "template match predicate": lambda c, d: sheet(
        f"<xsl:template match=\"doc[{c} != 'x']\">hit</xsl:template>", d),
    "key use": lambda c, d: sheet(
        "<xsl:template match=\"/\"><xsl:value-of select=\"count(key('k', 'x'))\"/>"
        "</xsl:template>", d, f'<xsl:key name="k" match="n" use="{c}"/>'),
    "key match predicate": lambda c, d: sheet(
        "<xsl:template match=\"/\"><xsl:value-of select=\"count(key('k', '3'))\"/>"
        "</xsl:template>", d, f"<xsl:key name=\"k\" match=\"n[{c} != 'x']\" use=\".\"/>"),
    "sort select": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:for-each select="//n"><xsl:sort select="{c}"/>'
        '<xsl:value-of select="."/></xsl:for-each></xsl:template>', d),
    "sort order template": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:for-each select="//n"><xsl:sort select="."'
        f' order="{{{c}}}"/><xsl:value-of select="."/></xsl:for-each></xsl:template>', d),
    "for-each select": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:for-each select="//n[{c} != \'x\']">'
        '<xsl:value-of select="."/></xsl:for-each></xsl:template>', d),
    "number value": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:number value="string-length({c})"/></xsl:template>', d),
    "global variable": lambda c, d: sheet(
        '<xsl:template match="/"><xsl:value-of select="$v"/></xsl:template>', d,
        f'<xsl:variable name="v" select="{c}"/>'),
    "with-param": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:call-template name="t"><xsl:with-param name="x" '
        f'select="{c}"/></xsl:call-template></xsl:template><xsl:template name="t">'
        '<xsl:param name="x"/><xsl:value-of select="$x"/></xsl:template>', d),
    "inside a standard function": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:value-of select="concat(\'\', count(//n[1]), {c})"/>'
        "</xsl:template>", d),
    "xsl:fallback of an unknown instruction": lambda c, d: sheet(
        f'<xsl:template match="/"><xsl:future-thing><xsl:fallback><xsl:value-of '
        f'select="{c}"/></xsl:fallback></xsl:future-thing></xsl:template>', d, version="2.0"),
    "simplified stylesheet": lambda c, d: (
        f'<out xsl:version="1.0" xmlns:xsl="{XSL_NS}" {d}><xsl:value-of select="{c}"/></out>'
    ).encode(),
}


def variants(call: str) -> dict[str, str]:
    """The same call written so that a pattern over the text might miss it."""
    prefix, rest = call.split(":", 1)
    return {
        "plain": call,
        "space before the parenthesis": call.replace("(", " \t\n(", 1),
        "character reference for the colon": f"{prefix}&#x3A;{rest}",
        "glued to an operator": f"1 and{call}",  # libxml2 reads `and {call}`
        "after an axis step": f"count(child::*) + string-length({call})",
    }


VARIANTS = list(variants("p:f()"))


# -- running stylesheets --------------------------------------------------------------------
def start_all(server: Server, stylesheets: dict[str, bytes]) -> dict[str, str]:
    """Start one transform thread per stylesheet, all at once; name → thread id."""

    def start(item: tuple[str, bytes]) -> tuple[str, str]:
        name, data = item
        with server.client("contributor") as http:
            answer = http.post(
                f"{GROUP}/threads", data={"job": "transform"},
                files=[("documents", ("a.xml", DOCUMENT, "application/xml")),
                       ("stylesheet", ("s.xsl", data, "application/xslt+xml"))])
        assert answer.status_code == 202, (name, answer.text)
        found = re.search(r'<thread id="([0-9a-f]{32})"', answer.text)
        assert found, answer.text
        return name, found.group(1)

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(start, stylesheets.items()))


def assert_refused_before_running(server: Server, stylesheets: dict[str, bytes],
                                  naming: dict[str, str]) -> None:
    """Every thread failed with the stylesheet's message naming the call (or `naming`'s text),
    transformed nothing and kept no result."""
    started = start_all(server, stylesheets)
    problems: list[str] = []
    with server.client("contributor") as http:
        for name, tid in started.items():
            thread = finish(http, tid)
            text = thread.findtext("message") or ""
            if thread.get("status") != "failed" or not text.startswith("The stylesheet "):
                problems.append(f"{name}: {thread.get('status')} {text[:300]!r}")
                continue
            if naming[name] not in text:
                problems.append(f"{name}: the message does not name {naming[name]!r}: {text!r}")
            if any("transformed to" in line for _, line in thread_logs(http, tid)):
                problems.append(f"{name}: a document was transformed")
            if result_bytes(http, tid) is not None:
                problems.append(f"{name}: a result was kept")
    assert not problems, "\n".join(problems)
    still_serving(server)


def unchecked_output(stylesheet: bytes) -> str | None:
    """The output with the check off (in this process), or None when libxslt itself refuses
    the stylesheet (a prefix libxml2 does not take as a name)."""
    try:
        outcome = Engine(stylesheet, refuse_extensions=False).run(DOCUMENT)
    except StylesheetError:
        return None
    assert outcome.output is not None, outcome.error
    return outcome.output.decode("utf-8")


def calls_unchecked(stylesheet: bytes, uri: str, local: str) -> int:
    """How often libxslt calls {uri}local when the stylesheet is compiled without the check
    (lxml's own stand-in for the function counts the calls)."""
    calls: list[object] = []

    def stand_in(context: object, *args: object) -> str:
        calls.append(args)
        return "RAN"

    transform = etree.XSLT(etree.fromstring(stylesheet), extensions={(uri, local): stand_in})
    # What the stand-in answers may not suit its place (xsl:sort order): it ran all the same.
    with contextlib.suppress(etree.XSLTApplyError):
        transform(etree.fromstring(DOCUMENT))
    return len(calls)


def call_of(template: str, prefix: str) -> str:
    return template.format(p=prefix)


# -- the attacks ------------------------------------------------------------------------------
def test_every_extension_namespace_under_every_prefix(server: Server) -> None:
    stylesheets, naming, ran = {}, {}, 0
    for uri, template, shows in EXTENSIONS:
        # every prefix for dyn:evaluate, and a few for each other function
        for prefix in PREFIXES if template == DYNAMIC[1] else PREFIXES[::4]:
            call = call_of(template, prefix)
            key = f"{uri} {prefix[:10]}"
            stylesheets[key] = PLACES["value-of"](call, ns(prefix, uri))
            naming[key] = re.search(r"[^(' ]+:[^(]+\(", call).group(0)  # type: ignore[union-attr]
            output = unchecked_output(stylesheets[key])
            if output is not None:
                assert shows in output, (key, output)  # the attack is real
                ran += 1
    assert ran >= len(stylesheets) - 3, ran  # all but the prefixes libxml2 refuses reach libxslt
    assert_refused_before_running(server, stylesheets, naming)


@pytest.mark.parametrize("place", sorted(PLACES))
def test_every_place_an_expression_is_evaluated(server: Server, place: str) -> None:
    uri, template, _ = DYNAMIC
    prefixes = ("é", "中", "e\u0301", "_x", "a.b", "xmlfoo")
    shift = sorted(PLACES).index(place)  # each place gets every variant, under five prefixes
    stylesheets, naming = {}, {}
    for index, variant in enumerate(VARIANTS):
        prefix = prefixes[(shift + index) % len(prefixes)]
        key = f"{prefix} {variant}"
        stylesheets[key] = PLACES[place](variants(call_of(template, prefix))[variant],
                                         ns(prefix, uri))
        naming[key] = f"{prefix}:evaluate()"
        # the attack is real: without the check, libxslt calls the function
        assert calls_unchecked(stylesheets[key], uri, "evaluate") > 0, key
    assert_refused_before_running(server, stylesheets, naming)


def test_unprefixed_functions_in_the_default_namespace_and_unknown_names(server: Server) -> None:
    """The default namespace never applies to function names; a plain name that is not a
    standard function is refused all the same (so nothing registered without a namespace
    could ever run)."""
    stylesheets = {
        "default namespace": sheet('<xsl:template match="/"><xsl:value-of '
                                   "select=\"evaluate('1')\"/></xsl:template>",
                                   'xmlns="http://exslt.org/dynamic"'),
        "node-set": sheet('<xsl:template match="/"><xsl:value-of select="node-set(.)"/>'
                          "</xsl:template>", 'xmlns="http://exslt.org/common"'),
        "made up": sheet('<xsl:template match="/"><xsl:value-of select="系统(1)"/>'
                         "</xsl:template>"),
    }
    naming = {"default namespace": "evaluate()", "node-set": "node-set()",
              "made up": "系统()"}
    assert_refused_before_running(server, stylesheets, naming)


def test_undeclared_and_xslt_prefixes_are_refused_too(server: Server) -> None:
    stylesheets = {
        "undeclared": PLACES["value-of"]("nowhere:evaluate('1')", ""),
        "xsl prefix": PLACES["value-of"]("xsl:document('x')", ""),
    }
    naming = {"undeclared": "nowhere:evaluate()", "xsl prefix": "xsl:document()"}
    assert_refused_before_running(server, stylesheets, naming)


EXTENSION_ELEMENTS = {
    "exsl:document on the stylesheet": (
        '<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}" xmlns:{p}="http://exslt.org/common" '
        'extension-element-prefixes="{p}"><xsl:template match="/"><{p}:document href="x.txt" '
        'method="text">RAN</{p}:document></xsl:template></xsl:stylesheet>'),
    "on the stylesheet": (
        '<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}" xmlns:{p}="http://xmlsoft.org/XSLT/'
        'namespace" extension-element-prefixes="{p}"><xsl:template match="/">'
        "<{p}:debug/>RAN</xsl:template></xsl:stylesheet>"),
    "on a literal result element": (
        '<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}"><xsl:template match="/">'
        '<out xmlns:{p}="http://exslt.org/common" xsl:extension-element-prefixes="{p}">'
        '<{p}:document href="x.txt" method="text">RAN</{p}:document></out></xsl:template>'
        "</xsl:stylesheet>"),
    "on a nested literal element": (
        '<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}"><xsl:template match="/"><a><b '
        'xmlns:{p}="http://icl.com/saxon" xsl:extension-element-prefixes="{p}">'
        "<{p}:output href=\"x.txt\">RAN</{p}:output></b></a></xsl:template></xsl:stylesheet>"),
    "on a simplified stylesheet": (
        '<out xsl:version="1.0" xmlns:xsl="{xsl}" xmlns:{p}="http://xmlsoft.org/XSLT/namespace" '
        'xsl:extension-element-prefixes="{p}"><{p}:debug/>RAN</out>'),
    "func:function under another prefix": (
        '<xsl:stylesheet version="1.0" xmlns:xsl="{xsl}" xmlns:{p}="http://exslt.org/functions" '
        'xmlns:m="urn:m"><{p}:function name="m:f"><{p}:result select="42"/></{p}:function>'
        '<xsl:template match="/">RAN</xsl:template></xsl:stylesheet>'),
}


def test_extension_elements_under_any_prefix(server: Server) -> None:
    stylesheets, naming = {}, {}
    for place, template in EXTENSION_ELEMENTS.items():
        for prefix in ("é", "中", "e\u0301", "xmlfoo", "a.b"):
            key = f"{place} {prefix}"
            stylesheets[key] = template.format(xsl=XSL_NS, p=prefix).encode()
            naming[key] = "function" if "func:" in place else "extension elements"
            # Without the check, libxslt runs those declared on the stylesheet's root: it tries
            # to write the file, or runs (and drops) libxslt:debug. It reads those declared on
            # a literal element as literal today; they are refused all the same.
            unchecked = Engine(stylesheets[key], refuse_extensions=False).run(DOCUMENT)
            if "href=" in template and "stylesheet" in place:
                assert "write" in str(unchecked.error), (key, unchecked)
            elif "stylesheet" in place:
                assert unchecked.output is not None and b":debug" not in unchecked.output, key
    assert_refused_before_running(server, stylesheets, naming)


def test_attribute_defaults_from_a_doctype(server: Server) -> None:
    """An attribute that only a DTD declares is invisible in the parsed tree: no DOCTYPE."""
    stylesheets = {
        "select default": (
            '<!DOCTYPE xsl:stylesheet [<!ATTLIST xsl:value-of select CDATA '
            "\"é:evaluate('1')\">]>").encode() + PLACES["value-of"]("'x'", ns("é", DYNAMIC[0])),
        "extension prefixes": (
            "<!DOCTYPE xsl:stylesheet [<!ATTLIST xsl:stylesheet extension-element-prefixes "
            'CDATA #FIXED "é">]>').encode() + PLACES["value-of"]("'x'", ns("é", DYNAMIC[0])),
        "empty": b"<!DOCTYPE xsl:stylesheet>" + PLACES["value-of"]("'x'", ""),
    }
    assert_refused_before_running(server, stylesheets, dict.fromkeys(stylesheets, "DOCTYPE"))


def test_a_call_at_the_end_of_a_huge_expression(server: Server) -> None:
    padding = " + ".join(["1"] * 100_000)
    stylesheets = {"huge": PLACES["value-of"](f"{padding} + string-length(é:evaluate('1'))",
                                              ns("é", DYNAMIC[0]))}
    assert_refused_before_running(server, stylesheets, {"huge": "é:evaluate()"})


# -- what still runs --------------------------------------------------------------------------
LEGITIMATE = f"""<xsl:stylesheet version="1.0" xmlns:xsl="{XSL_NS}"
    xmlns:é="urn:data" xmlns:and="urn:and" exclude-result-prefixes="é and">
  <xsl:output method="text"/>
  <xsl:decimal-format name="eu" decimal-separator="," grouping-separator="."/>
  <xsl:key name="by-n" match="n" use="."/>
  <xsl:variable name="div" select="2"/>
  <xsl:template match="/">
    <xsl:variable name="and:v" select="'q'"/>
    <xsl:value-of select="concat(last(), position(), count(//n), count(id('x')),
        local-name(/*), namespace-uri(/*), name(/*), string(1), starts-with('ab', 'a'))"/>|<xsl:value-of
      select="concat(contains('ab', 'b'), substring-before('a-b', '-'),
        substring-after('a-b', '-'), substring('hello', 2, 3), string-length('abc'),
        normalize-space('  a  b '), translate('abc', 'abc', 'ABC'), boolean(0), not(1))"/>|<xsl:value-of
      select="concat(true(), false(), lang('en'), number('4'), sum(//n), floor(2.5),
        ceiling(2.5), round(2.5))"/>|<xsl:value-of
      select="concat(count(document(/doc/none)), count(key('by-n', '2')),
        format-number(1234.5, '#.##0,00', 'eu'), count(current()), unparsed-entity-uri('u'),
        string-length(generate-id(/)) > 0, string-length(system-property('xsl:vendor')) > 0,
        element-available('xsl:value-of'), function-available('count'),
        function-available('é:evaluate'))"/>|<xsl:value-of
      select="concat(4 div $div, ' ', 7 mod 3, ' ', 1 and 0 or 1, ' ', $and:v, ' ',
        count(//é:x | //and:y), ' ', count(//div), count(//and), count(//text), count(//node),
        count(/doc/child::n[. > 1]), count(//n/text()), count(//comment()),
        count(//processing-instruction('p')), count(//node()[self::n]), 2*3, ' ', - -1)"/>|<xsl:for-each
      select="//n"><xsl:sort select="." data-type="number" order="{{concat('desc', 'ending')}}"/><xsl:value-of
      select="."/></xsl:for-each>|<xsl:number value="count(//n) * 2" format="i"/>|<xsl:value-of
      select="'é:evaluate(1) and:f()'"/>|<xsl:value-of select="count(//*[local-name() = 'title'])"/>
  </xsl:template>
</xsl:stylesheet>""".encode()


def test_a_legitimate_stylesheet_still_runs(server: Server) -> None:
    with server.client("contributor") as http:
        answer = http.post(
            f"{GROUP}/threads", data={"job": "transform"},
            files=[("documents", ("a.xml", DOCUMENT, "application/xml")),
                   ("stylesheet", ("s.xsl", LEGITIMATE, "application/xslt+xml"))])
        assert answer.status_code == 202, answer.text
        tid = answer.text.split('id="', 1)[1][:32]
        thread = finish(http, tid)
        assert thread.get("status") == "completed", thread.findtext("message")
        result = result_bytes(http, tid)
    assert result is not None
    with zipfile.ZipFile(io.BytesIO(result)) as archive:
        output = archive.read("a.txt").decode("utf-8")
    assert output.strip() == (
        "1130docdoc1true|trueabell3a bABCfalsefalse|truefalsefalse46233|"
        "011.234,501truetruetruetruefalse|2 1 true q 0 0000230036 1|321|vi|"
        "é:evaluate(1) and:f()|1"
    ), output


def test_the_legitimate_stylesheet_passes_the_check_unchanged() -> None:
    """The same output with the check off: the check only refuses, it never changes a run."""
    checked = Engine(LEGITIMATE).run(DOCUMENT)
    unchecked = Engine(LEGITIMATE, refuse_extensions=False).run(DOCUMENT)
    assert checked.error is None and checked.output == unchecked.output


def test_answers_stay_documents(server: Server) -> None:
    """The failed threads' lists and progress are valid documents (the message holds odd
    prefixes, a 2000-character one included)."""
    with server.client("contributor") as http:
        answer = http.get(f"{GROUP}/threads", params={"status": "all", "pagesize": 1000})
        assert answer.status_code == 200
        etree.fromstring(answer.content)
        assert httpx.get(f"{server.url}/health").status_code == 200
