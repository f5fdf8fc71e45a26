"""Job parameters say what is wrong with a value in plain words, naming only declared bounds."""

from __future__ import annotations

from typing import Any

import pytest

from threadsvc.errors import BadParameter
from threadsvc.runner.params import Integer, Number, Param


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
