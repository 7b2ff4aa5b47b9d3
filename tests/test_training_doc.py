"""docs/training.md says what train.py does: every option in its tables, every recipe as
keras_fer/recipes.py sets it."""

import re
from pathlib import Path

import pytest

from keras_fer.cli.train import build_parser
from keras_fer.recipes import RECIPES

DOC = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `(--[a-z-]+)[^`]*` \| .+ \|$", re.MULTILINE)
RECIPE_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| `(\w+)` \|(.*)\|$", re.MULTILINE)


def test_every_option_has_a_row_and_every_row_is_an_option():
    options = {option for action in build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    documented = ROW.findall(DOC)
    assert len(documented) == len(set(documented))  # each once
    assert set(documented) == options


def describe_optimizer(recipe):
    """The recipe's optimizer cell: `adam 1e-4`, `sgd 0.01, momentum 0.9`, the phases one after
    another, and the schedule when it is not constant."""
    def rate(value):
        return f"{value:.0e}".replace("e-0", "e-") if value < 0.01 else repr(float(value))  # 1e-4, 0.01, 1.0

    if "phases" in recipe:
        first, *rest = recipe["phases"]
        text = f"{first['optimizer']} {rate(first['lr'])} for {first['epochs']} epochs" + "".join(
            f", then {phase['optimizer']} {rate(phase['lr'])} for {phase['epochs']}" for phase in rest)
    else:
        text = f"{recipe['optimizer']} {rate(recipe['lr'])}"
    if "momentum" in recipe:
        text += f", momentum {recipe['momentum']:g}"
    if recipe.get("schedule", "constant") != "constant":
        text += f", {recipe['schedule']} to 0"
    return text


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_recipe_table_matches_the_recipes(name):
    rows = {match[0]: [match[1]] + [cell.strip().strip("`") for cell in match[2].split("|")]
            for match in RECIPE_ROW.findall(DOC)}
    recipe = RECIPES[name]
    arch, val, optimizer, epochs, batch, augment, normalize, also = rows[name]
    assert (arch, val, batch, augment, normalize) == (
        recipe["arch"], recipe["val"], str(recipe["batch_size"]), recipe["augment"], recipe["normalize"])
    total = sum(phase["epochs"] for phase in recipe["phases"]) if "phases" in recipe else recipe["epochs"]
    assert epochs == str(total)
    assert optimizer == describe_optimizer(recipe)
    expected = f"--stop-at-accuracy {recipe['stop_at_accuracy']:g}" if "stop_at_accuracy" in recipe else ""
    assert also == expected
    known = {"description", "arch", "val", "optimizer", "lr", "momentum", "epochs", "batch_size", "augment",
             "normalize", "phases", "schedule", "stop_at_accuracy"}
    assert set(recipe) <= known, f"a recipe key the table has no column for: {set(recipe) - known}"
