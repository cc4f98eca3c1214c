"""Option range checks: inclusive and exclusive bounds, allowed extra values, non-numbers, one message each."""

from __future__ import annotations

import math

import pytest

from llama_unsloth.errors import OptionError
from llama_unsloth.validation import check_choice, check_range, flag_name


def _message(**kwargs) -> str:
    name, value = kwargs.pop("name", "max_steps"), kwargs.pop("value")
    with pytest.raises(OptionError) as caught:
        check_range(name, value, **kwargs)
    return str(caught.value)


def test_flag_names() -> None:
    assert flag_name("chunk_size") == "--chunk-size"
    assert flag_name("learning_rate") == "--learning-rate"
    assert flag_name("--similarity-top-k") == "--similarity-top-k"
    assert flag_name("r") == "--r"


def test_option_error_is_a_value_error() -> None:
    assert issubclass(OptionError, ValueError)


def test_unset_and_in_range_values_pass() -> None:
    check_range("max_steps", None, min=1)
    for value in (1, 2, 10**9, 1.5):
        check_range("max_steps", value, min=1)
    check_range("lora_dropout", 0.0, min=0, lt=1)
    check_range("top_p", 1.0, gt=0, max=1)


def test_bounds_are_inclusive_or_exclusive_as_named() -> None:
    check_range("x", 1, min=1)  # min is inclusive
    check_range("x", 5, max=5)  # max is inclusive
    assert _message(name="learning_rate", value=0, gt=0) == "--learning-rate must be > 0; got 0."
    assert _message(name="lora_dropout", value=1, min=0, lt=1) == "--lora-dropout must be >= 0 and < 1; got 1."
    assert _message(name="top_p", value=1.5, gt=0, max=1) == "--top-p must be > 0 and <= 1; got 1.5."
    assert _message(name="--chunk-size", value=0, min=1) == "--chunk-size must be >= 1; got 0."


def test_values_below_and_above() -> None:
    assert _message(value=0, min=1) == "--max-steps must be >= 1; got 0."
    assert _message(value=-3, min=1) == "--max-steps must be >= 1; got -3."
    assert _message(name="temperature", value=2.5, min=0, max=2) == "--temperature must be >= 0 and <= 2; got 2.5."
    assert _message(name="learning_rate", value=-1e-05, gt=0) == "--learning-rate must be > 0; got -1e-05."


def test_allowed_extra_values() -> None:
    check_range("max_steps", -1, min=1, also=[-1])
    assert _message(value=0, min=1, also=[-1]) == "--max-steps must be >= 1 (or -1); got 0."
    assert _message(value=-2, min=1, also=[-1]) == "--max-steps must be >= 1 (or -1); got -2."


@pytest.mark.parametrize("value", [True, False, "3", [1], math.nan, math.inf, -math.inf])
def test_non_numbers_are_rejected(value) -> None:
    message = _message(name="batch_size", value=value, min=1, also=[1, 0])
    assert message == f"--batch-size must be a number; got {value!r}."


def test_choices() -> None:
    check_choice("backend", "auto", ["auto", "unsloth", "transformers"])
    check_choice("backend", None, ["auto"])  # unset
    with pytest.raises(OptionError) as caught:
        check_choice("backend", "tranformers", ["auto", "unsloth", "transformers"])
    assert str(caught.value) == "--backend must be one of auto, unsloth, transformers; got 'tranformers'."
    with pytest.raises(OptionError, match=r"^--chunk-unit must be one of tokens, characters; got 'Tokens'\.$"):
        check_choice("chunk_unit", "Tokens", ("tokens", "characters"))
