"""What an untrusted XSLT 1.0 stylesheet may hold, decided on its parsed tree before it compiles.

The threat: a stylesheet is code sent by any contributor. libxslt, as lxml builds it, gives every
stylesheet EXSLT's functions and elements and its own (`dyn:evaluate`, `str:padding`,
`date:date`, `exsl:node-set`, `exsl:document`, `func:function`, `libxslt:debug`, saxon's and
xalan's aliases...). A function is found by the namespace its prefix is bound to, so the
prefix itself can be spelt any way XML allows (`é`, `中`, `_x`, `a.b`, combining marks, names
starting with `xml`): a rule that looks at prefixes as text misses some. The rules here
therefore look at what libxslt will execute:

- Every function call in every XPath expression must be a function of XPath 1.0 or XSLT 1.0,
  called by its plain name. A prefixed call is refused whatever the prefix and whatever it is
  bound to (no standard function has a namespace; XSLT's own included), and so is a plain name
  that is not a standard function. Expressions are the `select`, `test`, `match`, `use`,
  `count`, `from` and `value` attributes of XSLT elements, and the `{...}` parts of every other
  attribute of every element (attribute value templates), at any depth, `xsl:fallback` and
  `xsl:sort` included. They are read with XPath 1.0's own lexical rules (string literals,
  the operator names `and`, `or`, `div`, `mod` after an operand, axes, node types), every
  non-ASCII character taken as part of a name, so that anything libxml2 could read as a call
  is seen as one here; a `:` that is neither in a prefixed name nor `::` is refused.
  `function-available()`, `element-available()` and `system-property()` are allowed: they
  only answer questions.
- `extension-element-prefixes` (or `xsl:extension-element-prefixes`) on any element is
  refused, and so is any element of EXSLT's functions namespace (libxslt defines
  `func:function` even when its prefix is not declared as an extension prefix).
- `xsl:include` and `xsl:import` are refused: a stylesheet is one self-contained file.
- A DOCTYPE is refused: attribute defaults declared there would be attributes this check does
  not see (libxslt ignores them today; the check does not rely on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxml import etree

XSL = "http://www.w3.org/1999/XSL/Transform"
EXSLT_FUNCTIONS = "http://exslt.org/functions"

# Attributes of XSLT elements that hold an expression or a pattern; every other attribute of
# the stylesheet is read as an attribute value template, whose {...} parts are expressions.
EXPRESSIONS = frozenset({"select", "test", "match", "use", "count", "from", "value"})

FUNCTIONS = frozenset({
    # XPath 1.0
    "last", "position", "count", "id", "local-name", "namespace-uri", "name", "string",
    "concat", "starts-with", "contains", "substring-before", "substring-after", "substring",
    "string-length", "normalize-space", "translate", "boolean", "not", "true", "false", "lang",
    "number", "sum", "floor", "ceiling", "round",
    # XSLT 1.0
    "document", "key", "format-number", "current", "unparsed-entity-uri", "generate-id",
    "system-property", "element-available", "function-available",
})
NODE_TYPES = frozenset({"comment", "text", "processing-instruction", "node"})
OPERATOR_NAMES = frozenset({"and", "or", "div", "mod"})

# A name: ASCII letters, digits, '_', '-', '.' (not first) and any non-ASCII character that is
# not white space. Wider than XML's names on purpose: libxml2 reads no more as a name.
_NAME = r"(?:[A-Za-z_]|[^\x00-\x7f\s])(?:[A-Za-z0-9_.\-]|[^\x00-\x7f\s])*"
_TOKEN = re.compile(
    rf"""(?P<space>\s+)
      | (?P<literal>"[^"]*"|'[^']*')
      | (?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
      | (?P<name>{_NAME}(?::(?!:)(?:{_NAME}|\*))?)
      | (?P<axis>::)
      | (?P<colon>:)
      | (?P<other>\.\.|//|!=|<=|>=|.)""",
    re.VERBOSE | re.DOTALL,
)
_ENDS_OPERAND = frozenset({")", "]", ".", ".."})


class StylesheetError(ValueError):
    """The stylesheet is refused or does not compile; the message says why."""


def check(tree: etree._ElementTree) -> None:
    """Raise StylesheetError, saying why and where, when the stylesheet breaks a rule above."""
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise StylesheetError("The stylesheet has a DOCTYPE; a stylesheet may not have one")
    for element in tree.iter(etree.Element):
        tag = etree.QName(element)
        in_xsl = tag.namespace == XSL
        line = element.sourceline
        if in_xsl and tag.localname in ("include", "import"):
            href = str(element.get("href", ""))[:200]
            raise StylesheetError(
                f"The stylesheet may not use xsl:{tag.localname} (href '{href}', line {line}): "
                "it must be self-contained"
            )
        if tag.namespace == EXSLT_FUNCTIONS:
            raise StylesheetError(
                f"The stylesheet defines EXSLT functions ({element.prefix}:{tag.localname}, "
                f"line {line}); extension functions are not allowed"
            )
        for name, value in element.attrib.items():
            attr = etree.QName(name)
            if attr.localname == "extension-element-prefixes" and attr.namespace in (None, XSL):
                raise StylesheetError(
                    f"The stylesheet declares extension elements ({str(value)[:100]}, line "
                    f"{line}); extension elements are not allowed"
                )
            is_expression = in_xsl and attr.namespace is None and attr.localname in EXPRESSIONS
            texts = [str(value)] if is_expression else avt_expressions(str(value))
            for text in texts:
                _check_expression(text, element, line)


def avt_expressions(value: str) -> Iterator[str]:
    """The expressions inside the {...} of an attribute value template (`{{` is a brace)."""
    i, n = value.find("{"), len(value)
    while i >= 0:
        if value.startswith("{{", i):
            i = value.find("{", i + 2)
            continue
        j, quote = i + 1, ""
        while j < n:
            ch = value[j]
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "}":
                break
            j += 1
        yield value[i + 1 : j]
        i = value.find("{", j + 1)


def function_calls(expression: str) -> Iterator[str]:
    """The names of the functions `expression` calls (node tests such as text() excluded), as
    XPath 1.0 reads them. Raises ValueError for a ':' that no name holds."""
    tokens = ((m.lastgroup, m.group()) for m in _TOKEN.finditer(expression)
              if m.lastgroup != "space")
    after_operand = False  # XPath's rule: then `and`, `or`, `div`, `mod` and `*` are operators
    current = next(tokens, None)
    while current is not None:
        kind, text = current
        current = next(tokens, None)
        following = current[1] if current is not None else ""
        if kind == "colon":
            raise ValueError("a ':' outside a prefixed name")
        if kind == "name":
            if (after_operand and text in OPERATOR_NAMES) or following == "::":  # or an axis
                after_operand = False
            elif following == "(":
                if text not in NODE_TYPES:
                    yield text
                after_operand = False
            else:
                after_operand = True  # a name test, or a variable's name after '$'
        elif kind in ("literal", "number"):
            after_operand = True
        elif text == "*":
            after_operand = not after_operand  # a name test, or multiplication
        else:
            after_operand = text in _ENDS_OPERAND


def _check_expression(expression: str, element: etree._Element, line: int | None) -> None:
    try:
        calls = list(function_calls(expression))
    except ValueError as exc:
        raise StylesheetError(f"The stylesheet's expression '{_clip(expression)}' (line {line}) "
                              f"is not XPath 1.0: {exc}") from None
    for call in calls:
        if call in FUNCTIONS:
            continue
        prefix, colon, _ = call.partition(":")
        if colon:
            bound = element.nsmap.get(prefix)
            where = f"{prefix} is bound to {bound}" if bound else f"{prefix} is not declared"
            raise StylesheetError(
                f"The stylesheet calls the extension function {call}() (line {line}; "
                f"{where}); extension functions are not allowed"
            )
        raise StylesheetError(
            f"The stylesheet calls {call}() (line {line}), which is not a function of XPath "
            "1.0 or XSLT 1.0; extension functions are not allowed"
        )


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
