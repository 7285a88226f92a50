"""Recipe method options are checked against the method's annotations, with the key, value and rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from neuroplastic.methods.dst import RigL
from neuroplastic.methods.npn import NPN
from neuroplastic.recipes.config import RecipeError
from neuroplastic.recipes.option_types import check_method_options, matches
from neuroplastic.recipes.runner import prepare


@pytest.mark.parametrize(
    "value, hint, ok",
    [
        (7, float, True), (7.5, float, True), (True, float, False), ("7", float, False),
        (3, int, True), (3.0, int, False), (True, bool, True), (1, bool, False),
        ([1, 2], Sequence[int], True), ((1, 2), Sequence[int], True), ([1, "a"], Sequence[int], False),
        (5, Sequence[int] | None, False), (None, Sequence[int] | None, True), ("ab", Sequence[str], False),
        ({"a": 1.0}, dict[str, float], True), ({"a": "x"}, dict[str, float], False), ([1], dict[str, int], False),
        ((1, "a"), tuple[int, str], True), ((1, 2), tuple[int, str], False), ((1, 2, 3), tuple[int, ...], True),
    ],
)
def test_matches_by_hand(value, hint, ok):
    assert matches(value, hint) is ok


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": "abc"}, "method.k: got 'abc' (str); allowed: a number"),
        ({"stages": 5}, "method.stages: got 5 (int); allowed: a list of (an integer) or None"),
        ({"lam": [1e-4, "x"]}, "method.lam: got"),
        ({"expand_every": 2.5}, "method.expand_every: got 2.5 (float); allowed: an integer or None"),
    ],
)
def test_npn_options_of_the_wrong_kind_are_named(options, message):
    with pytest.raises(RecipeError) as err:
        check_method_options(NPN, options)
    assert message in str(err.value)


def test_options_inherited_through_keyword_arguments_are_checked():
    check_method_options(RigL, {"density": 0.1, "update_every": 100})
    with pytest.raises(RecipeError, match="method.density"):
        check_method_options(RigL, {"density": "dense"})


def test_the_runner_refuses_a_bad_option_before_writing_anything(tmp_path):
    with pytest.raises(RecipeError, match="method.k: got 'abc'"):
        prepare("npn-moons-sparse", ["method.k=abc"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
