"""The committed results: every submission is a complete Kaggle file, every saved ensemble member
a readable `predict.py --proba` output of the validation split, and both READMEs list exactly the
files that are there."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest

from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.data import open_text
from keras_fer.inference import read_saved_probabilities

RESULTS = Path(__file__).resolve().parent.parent / "results"
SUBMISSIONS = sorted((RESULTS / "submissions").glob("*.csv"))
MEMBERS = sorted((RESULTS / "probabilities").glob("*_val.csv.gz"))
#: Rows of FER2013's test.csv.gz (ids 0..7177) and of the validation split every member predicts
#: (`--val fraction:0.1 --split-seed 0`: ids 0..2871).
TEST_ROWS = 7178
VAL_ROWS = 2872


def table_files(readme):
    """The file names in the first column of a README's table rows (`| \\`NAME\\` | ...`)."""
    return {match.group(1) for match in re.finditer(r"^\| `([^`]+)` \|", readme.read_text(), re.MULTILINE)}


def test_there_are_results_to_check():
    assert len(SUBMISSIONS) >= 10
    assert len(MEMBERS) >= 2


@pytest.mark.parametrize("path", SUBMISSIONS, ids=lambda path: path.name)
def test_submission_is_a_complete_kaggle_file(path):
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "label"]
    ids = [row[0] for row in rows[1:]]
    labels = [row[1] for row in rows[1:]]
    assert ids == [str(index) for index in range(TEST_ROWS)]
    assert set(labels) <= {str(label) for label in range(NUM_CLASSES)}


def test_submissions_readme_lists_exactly_the_files():
    listed = table_files(RESULTS / "submissions" / "README.md")
    assert listed == {path.name for path in SUBMISSIONS}


@pytest.mark.parametrize("path", MEMBERS, ids=lambda path: path.name)
def test_saved_member_is_a_proba_output_of_the_validation_split(path):
    saved = read_saved_probabilities(path)  # checks columns, numbers and row sums
    assert list(saved.ids) == [str(index) for index in range(VAL_ROWS)]
    with open_text(path) as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header[:2] == ["id", "label"] and header[2:] == list(CLASS_NAMES)
    labels = np.array([int(row[1]) for row in rows[1:]])
    # The label column is the most probable class (ties within the 6 written decimals aside).
    agree = labels == saved.probabilities.argmax(axis=1)
    assert agree.mean() > 0.999


def test_probabilities_readme_lists_exactly_the_members():
    listed = table_files(RESULTS / "probabilities" / "README.md")
    assert listed == {path.name.removesuffix("_val.csv.gz") for path in MEMBERS}


def test_no_test_side_probabilities_are_committed():
    # Per-row outputs on the test data stay outside the repository (results/probabilities/README.md).
    assert not list((RESULTS / "probabilities").glob("*_test*"))
