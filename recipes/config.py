"""Command-line parsing for every recipe: TRL's ``TrlParser`` over the recipe's dataclasses.

Each dataclass field is a flag (``--chunk-size`` and ``--chunk_size``), ``Literal`` fields become
choices, booleans take ``--flag`` / ``--no-flag``, ``--config file.yaml`` sets any option (flags win),
and ``--help`` shows each default. Values are checked in the dataclasses' ``__post_init__``
(:mod:`llama_unsloth.validation`).

One error path: whatever a user can fix (a bad value, an unreadable or unknown ``--config``, a model
that cannot load) is one line ``error: ...`` on stderr and exit code 2, before any model or database
loads (:func:`fail`). :class:`RecipeParser` differs from ``TrlParser`` in one way only: it reads the
``--config`` file itself, because our users' editors save YAML in CP932 or UTF-16 (TRL opens it in the
locale's encoding) and because a broken file must be one line, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

from llama_unsloth.errors import OptionError  # noqa: F401 (recipes raise it from their checks)
from llama_unsloth.import_utils import import_unsloth_first

# TRL imports transformers: in a recipe's process unsloth must be imported before them (it patches them, and
# warns that code may run slower otherwise). Only recipes import this module; --backend transformers skips it.
import_unsloth_first()
from trl import TrlParser  # noqa: E402


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Prints ``error: <message>`` as one line on stderr and exits with ``code`` (2: bad usage)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, and the recipe's docstring (its commands) as written."""


def _read_config_file(path: str) -> dict:
    """The option values in a YAML/JSON ``--config`` file, in any text encoding; one-line errors (exit 2)."""
    from llama_unsloth.errors import UnreadableFileError
    from llama_unsloth.text_files import read_text

    file = Path(path)
    if not file.is_file():
        fail(f"--config {path}: file not found.")
    try:
        text = read_text(file).text
    except UnreadableFileError as err:
        fail(f"--config {err}")
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: say where, in one line
        fail(f"--config {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({err}).")
    if not isinstance(data, dict):
        fail(f"--config {path}: expected a mapping of option names to values.")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


class RecipeParser(TrlParser):
    """``TrlParser`` that reads ``--config`` in any encoding and reports every user error in one line."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        # argparse would print the whole usage first: hundreds of lines with SFTConfig's options.
        choice = re.match(r"argument (\S+): invalid choice: (.+?) \(choose from (.+)\)$", message)
        if choice:  # the same words as every other bad value (llama_unsloth.validation)
            names, got, allowed = choice.groups()
            flag = next((n for n in names.split("/") if "_" not in n), names.split("/")[-1])
            fail(
                f"{flag} must be one of {', '.join(a.strip().strip(chr(39)) for a in allowed.split(','))}; got {got}."
            )
        fail(f"{message} (see --help)")

    def parse_args_and_config(  # type: ignore[override]
        self, args: Optional[Iterable[str]] = None, return_remaining_strings: bool = False, **kwargs: Any
    ) -> Tuple[Any, ...]:
        args = list(sys.argv[1:] if args is None else args)
        if "--config" in args:
            at = args.index("--config")
            if at + 1 >= len(args):
                fail("--config needs a file name.")
            path = args[at + 1]
            del args[at : at + 2]
            values = _read_config_file(path)
            for key, value in dict(values.pop("env", None) or {}).items():  # TRL's `env:` section
                os.environ[str(key)] = str(value)
            unknown = self.set_defaults_with_config(**values)
            if unknown:
                names = sorted(k[2:] for k in unknown[::2])
                valid = sorted(a.dest for a in self._actions if a.dest not in ("help",))
                fail(f"--config {path}: unknown option(s) {', '.join(names)}; valid: {', '.join(valid)}.")
        try:
            *parsed, remaining = self.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
            if remaining and not return_remaining_strings:
                fail(f"unknown option(s) {' '.join(remaining)} (see --help)")
            return (*parsed, remaining) if return_remaining_strings else tuple(parsed)
        except ValueError as err:  # OptionError from our checks, or TRL's/transformers' own on a value
            fail(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turns an error the user can fix from its message (:func:`llama_unsloth.errors.user_errors`) into :func:`fail`."""
    from llama_unsloth.errors import USER_ERRORS

    try:
        yield
    except USER_ERRORS as err:
        fail(str(err))


def make_parser(dataclass_types: Sequence[type], description: Optional[str] = None) -> RecipeParser:
    """The parser of a recipe: one flag per field of ``dataclass_types`` (TRL's ``TrlParser``)."""
    return RecipeParser(list(dataclass_types), description=description, formatter_class=_HelpFormatter)


def start(make_recipe_parser: Any, argv: Optional[Sequence[str]] = None) -> Tuple[Any, ...]:
    """How every recipe begins: unsloth imported first where it runs, then its options parsed and checked."""
    import_unsloth_first(argv)  # argv, not sys.argv: a recipe's main(argv) may be given --backend transformers
    return parse(make_recipe_parser(), argv)


def parse(parser: RecipeParser, argv: Optional[Sequence[str]] = None) -> Tuple[Any, ...]:
    """Parses ``argv`` (default ``sys.argv[1:]``) into one instance per dataclass, checked; exits 2 on a user error."""
    return tuple(parser.parse_args_and_config(list(argv) if argv is not None else None))


def check_model_option(name: Optional[str], flag: str = "--model") -> None:
    """Refuses a hub id that cannot load here (offline, not cached) before anything loads.

    ``None`` means the default: ``$LLAMA_UNSLOTH_MODEL`` if set (checked the same way), else the bundled model.

    Raises:
        OptionError: One line saying to pass a local folder or set the environment variable.
    """
    from llama_unsloth.defaults import MODEL_ENV
    from llama_unsloth.hub_check import offline_model_problem

    problem = offline_model_problem(name or os.environ.get(MODEL_ENV), "Model", flag, MODEL_ENV)
    if problem:
        raise OptionError(problem)


__all__ = [
    "RecipeParser",
    "check_model_option",
    "exit_on_user_error",
    "fail",
    "make_parser",
    "parse",
    "start",
]
