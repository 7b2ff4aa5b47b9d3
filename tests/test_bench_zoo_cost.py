"""bench/zoo_cost.py's model specs: `NAME:KEY=VALUE...` builds a model with builder options."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("zoo_cost", Path(__file__).parents[1] / "bench" / "zoo_cost.py")
zoo_cost = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(zoo_cost)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("fervgg", ("fervgg", {})),
        ("fervgg:width=1.5", ("fervgg", {"width": 1.5})),
        ("resnet18:stem=small", ("resnet18", {"stem": "small"})),
        ("fervgg:width=2:dense_units=64:head=avg", ("fervgg", {"width": 2, "dense_units": 64, "head": "avg"})),
    ],
)
def test_model_spec_parses_name_and_typed_options(spec, expected):
    assert zoo_cost.parse_model_spec(spec) == expected


@pytest.mark.parametrize("spec", ["resnet18:stem", "fervgg:=1.5"])
def test_model_spec_without_key_or_value_is_a_one_line_error(spec):
    with pytest.raises(SystemExit, match=f"Received: {spec!r}"):
        zoo_cost.parse_model_spec(spec)
