"""Job parameters say what is wrong with a value in plain words, naming only declared bounds."""

from __future__ import annotations

from typing import Any

import pytest

from threadsvc.errors import BadParameter
from threadsvc.runner.params import Choice, File, Integer, Number, Param, Text, describe


@pytest.mark.parametrize(("param", "raw", "said"), [
    (Integer(minimum=1), "0", "Parameter 'n' must be at least 1"),
    (Integer(maximum=10), "11", "Parameter 'n' must be at most 10"),
    (Integer(minimum=1, maximum=10), "11", "Parameter 'n' must be from 1 to 10"),
    (Number(minimum=0.5), "0.25", "Parameter 'n' must be at least 0.5"),
    (Number(maximum=2.5), "3", "Parameter 'n' must be at most 2.5"),
    (Number(minimum=0, maximum=1), "-1", "Parameter 'n' must be from 0 to 1"),
])
def test_out_of_bounds_names_only_the_declared_bounds(param: Param, raw: str, said: str) -> None:
    with pytest.raises(BadParameter) as refused:
        param.parse("n", raw)
    assert str(refused.value) == said
    assert "None" not in str(refused.value)


@pytest.mark.parametrize(("param", "raw", "value"), [
    (Integer(minimum=1), "1", 1),
    (Integer(maximum=10), "-5", -5),
    (Number(minimum=0.5), "0.5", 0.5),
    (Integer(), "123", 123),
])
def test_values_within_bounds_pass(param: Param, raw: str, value: Any) -> None:
    assert param.parse("n", raw) == value


class Port(Integer):
    """A job's own type derived from Integer."""


class Flag(Param):
    """A job's own type that declares nothing the description knows."""


@pytest.mark.parametrize(("param", "described"), [
    (Integer(minimum=1), {"type": "integer", "minimum": 1, "maximum": None}),
    (Port(minimum=1, maximum=65535), {"type": "integer", "minimum": 1, "maximum": 65535}),
    (Number(maximum=2.5, default=1.0), {"type": "number", "maximum": 2.5, "default": 1.0}),
    (Choice(choices=("a", "b")), {"type": "choice", "choices": ("a", "b")}),
    (Text(pattern="[a-z]+", max_length=5), {"type": "text", "pattern": "[a-z]+",
                                            "max_length": 5}),
    (File(multiple=True, required=True), {"type": "file", "multiple": True, "required": True}),
    (Flag(), {"type": "text", "pattern": None, "choices": None}),
])
def test_described_as_declared(param: Param, described: dict[str, Any]) -> None:
    said = describe(param)
    for key, value in described.items():
        assert getattr(said, key) == value, key
