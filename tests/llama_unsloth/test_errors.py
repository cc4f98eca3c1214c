"""llama_unsloth.errors is the one home of every exception class the package defines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_outside_errors_py_defines_an_exception() -> None:
    from llama_unsloth import errors

    defined_elsewhere = []
    for package in ("llama_unsloth", "postprocessors", "recipes"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", "")).endswith(("Error", "Exception", "Interrupt"))
                    for base in node.bases
                ):
                    defined_elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert defined_elsewhere == []
    # The names users import from their old homes still work and are the same classes.
    from llama_unsloth.layouts import PromptFormatError
    from llama_unsloth.models import ModelLoadError
    from postprocessors import EmbeddingServiceError

    assert (ModelLoadError, PromptFormatError, EmbeddingServiceError) == (
        errors.ModelLoadError,
        errors.PromptFormatError,
        errors.EmbeddingServiceError,
    )


def test_every_user_error_is_caught_by_the_recipes() -> None:
    from llama_unsloth import errors

    for name in (
        "DatasetError",
        "HubTokenError",
        "OptionError",
        "ServedModelError",
        "PromptTooLongError",
        "ModelLoadError",
    ):
        assert issubclass(getattr(errors, name), errors.USER_ERRORS), name
    assert not issubclass(errors.GenerationOutOfMemoryError, errors.USER_ERRORS)  # a GPU fault, not a usage error
