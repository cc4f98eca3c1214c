"""Command-line parsing for every recipe: TRL's ``TrlParser`` over the recipe's dataclasses.

Each dataclass field is a flag (``--chunk-size`` and ``--chunk_size``), ``Literal`` fields become
choices, booleans take ``--flag`` / ``--no-flag``, ``--config file.yaml`` sets any option (flags win),
and ``--help`` shows each default. Values are checked in the dataclasses' ``__post_init__``
(:mod:`llama_unsloth.validation`); values from ``--config`` are first checked against their fields' types
(:func:`check_config_types`), which argparse does for command-line text only.

One error path: whatever a user can fix (a bad value, an unreadable or unknown ``--config``, a model
that cannot load) is one line ``error: ...`` on stderr and exit code 2, before any model or database
loads (:func:`fail`). :class:`RecipeParser` differs from ``TrlParser`` in one way only: it reads the
``--config`` file itself, because our users' editors save YAML in CP932 or UTF-16 (TRL opens it in the
locale's encoding) and because a broken file, or a value of the wrong type in it, must be one line, not a
traceback after the model loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import json
import os
import re
import sys
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from llama_unsloth.errors import ConfigTypeMismatch, OptionError, UncheckableConfigType  # noqa: F401 (recipes raise OptionError from their checks)
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
            data = _load_yaml(text) or {}
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: say where, in one line
        fail(f"--config {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({err}).")
    if not isinstance(data, dict):
        fail(f"--config {path}: expected a mapping of option names to values.")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


_NONE = type(None)
# Plural words for a list's items, by item type.
_ITEMS = {int: "integers", float: "numbers", str: "text", bool: "true/false values"}


def _conform_choice(value: Any, choices: Sequence[Any], enum_type: Optional[type] = None) -> Any:
    """``value`` if it is one of ``choices`` (a Literal's values, an Enum's values or members)."""
    if enum_type is not None and isinstance(value, enum_type):
        return value
    if any(value == choice and type(value) is type(choice) for choice in choices):
        return value
    # YAML reads an unquoted true/false as a bool: where "true"/"false" are choices, that text is what was meant.
    if isinstance(value, bool) and str(value).lower() in choices:
        return str(value).lower()
    raise ConfigTypeMismatch("one of " + ", ".join(map(str, choices)))


def _conform_union(value: Any, members: Sequence[Any]) -> Any:
    """``value`` as the first member type that takes it as it is, else the first that takes it converted."""
    if value is None and _NONE in members:
        return None
    wanted: List[ConfigTypeMismatch] = []
    unreadable = False
    for convert in (False, True):  # "12" stays text in Union[int, str]; it becomes 12 in Optional[int]
        for member in (m for m in members if m is not _NONE):
            try:
                return _conform(value, member, convert)
            except ConfigTypeMismatch as err:
                wanted.append(err)
            except UncheckableConfigType:
                unreadable = True
    if unreadable:
        raise UncheckableConfigType
    text = any(w.text for w in wanted)
    # Where any text is allowed, naming the choices of an Enum beside it would only mislead.
    words = list(dict.fromkeys(w.expected for w in wanted if not (text and w.expected.startswith("one of"))))
    if _NONE in members:
        words.append("null")
    raise ConfigTypeMismatch(" or ".join(words), text)


def _conform_list(value: Any, item: Any, convert: bool) -> List[Any]:
    """``value`` as a list of ``item``; one value alone is one item, as one value after the flag would be."""
    words = f"a list of {_ITEMS.get(item, 'values')}"
    if not isinstance(value, list):
        if not convert or isinstance(value, (dict, _NONE)):
            raise ConfigTypeMismatch(words)
        value = [value]
    if item is Any:
        return value
    try:
        return [_conform(v, item) for v in value]
    except ConfigTypeMismatch:
        raise ConfigTypeMismatch(words) from None


def _conform_number(value: Any, hint: type, convert: bool) -> Any:
    """``value`` as an int/float field takes it: bools are no numbers, floats no integers (12.5 and 16.0 alike)."""
    if isinstance(value, bool):
        raise ConfigTypeMismatch("an integer" if hint is int else "a number")
    if isinstance(value, int) or (hint is float and isinstance(value, float)):
        return value
    if convert and isinstance(value, str):  # quoted: read as the command line reads it
        if hint is int and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        if hint is float:
            try:
                return float(value)  # YAML 1.1 reads 2e-4 (no dot) as text; the command line reads it as a number
            except ValueError:
                pass
    raise ConfigTypeMismatch("an integer" if hint is int else "a number")


def _conform(value: Any, hint: Any, convert: bool = True) -> Any:
    """``value`` as a field of type ``hint`` takes it (quoted numbers and booleans converted where ``convert``).

    Raises:
        ConfigTypeMismatch: The value is of another type.
        UncheckableConfigType: ``hint`` is a type this check does not read (``Any``, a class, ...).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _conform_union(value, args)
    if origin is typing.Literal:
        return _conform_choice(value, args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _conform_choice(value, [member.value for member in hint], hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if convert and isinstance(value, str):
            from transformers.hf_argparser import string_to_bool  # what --flag yes/no accepts

            try:
                return string_to_bool(value.strip())
            except Exception:  # noqa: BLE001 - argparse's ArgumentTypeError: the words below say it
                pass
        raise ConfigTypeMismatch("true or false")
    if hint in (int, float):
        return _conform_number(value, hint, convert)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigTypeMismatch("text", text=True)
    if origin is list or hint is list:
        return _conform_list(value, args[0] if args else Any, convert)
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise ConfigTypeMismatch("a mapping")
    raise UncheckableConfigType


def _load_yaml(text: str) -> Any:
    """YAML as the YAML spec reads it, whatever was imported before: a config file means the same in every process.

    PyYAML's ``SafeLoader`` is global and libraries change it: lm-format-enforcer (structured outputs) makes it read
    timestamps as text on import. Our own loader class keeps the standard constructors.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    safe = yaml.constructor.SafeConstructor
    for kind in ("null", "bool", "int", "float", "binary", "timestamp", "omap", "pairs", "set", "str", "seq", "map"):
        ConfigLoader.add_constructor(f"tag:yaml.org,2002:{kind}", getattr(safe, f"construct_yaml_{kind}"))
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _shown(value: Any) -> str:
    """A config value as the message shows it: YAML's words (true, null), text quoted, long values cut."""
    if isinstance(value, str):
        shown = repr(value)
    elif isinstance(value, (datetime.date, datetime.time)):
        shown = value.isoformat()
    else:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _field_types(dataclass_types: Iterable[type]) -> Dict[str, Any]:
    """Each option's declared type, by its name (HfArgumentParser narrows ``field.type`` in place: read the hints)."""
    hints_by_name: Dict[str, Any] = {}
    for dtype in dataclass_types:
        try:
            hints = typing.get_type_hints(dtype)
        except Exception:  # noqa: BLE001 - a hint that does not resolve: those fields keep their own checks only
            continue
        for f in dataclasses.fields(dtype):
            if f.init and f.name in hints:
                hints_by_name.setdefault(f.name, hints[f.name])
    return hints_by_name


def check_config_types(path: str, values: Dict[str, Any], dataclass_types: Iterable[type]) -> Dict[str, Any]:
    """The ``--config`` values, each checked against its option's type before any dataclass is built.

    argparse converts and checks command-line text only: TRL sets config values as defaults, which reach
    the dataclasses unchecked (a float in an int option, a number where text belongs) and fail late, after
    the index and the model loaded. Quoted numbers and booleans are converted as the command line would;
    one value for a list option is one item. Types that cannot be read with confidence (``Any``, classes of
    TRL and transformers) are left to the fields' own checks; unknown keys are left to the caller.

    Returns:
        The values, converted where they were quoted.

    Raises:
        SystemExit: (via :func:`fail`) ``--config run.yaml: max_new_tokens must be an integer; got 12.5.``
    """
    hints, checked = _field_types(dataclass_types), dict(values)
    for key, value in values.items():
        if key not in hints:
            continue
        try:
            checked[key] = _conform(value, hints[key])
        except UncheckableConfigType:
            pass
        except ConfigTypeMismatch as err:
            fail(f"--config {path}: {key} must be {err.expected}; got {_shown(value)}{_quote_hint(value, err)}.")
    return checked


def _quote_hint(value: Any, err: ConfigTypeMismatch) -> str:
    """Where text belongs and YAML read an unquoted 2024, 1.10, no or 2024-01-01 as something else: say so."""
    if err.expected not in ("text", "text or null") or not isinstance(value, (bool, int, float, datetime.date)):
        return ""
    kind = "true/false" if isinstance(value, bool) else "a date" if isinstance(value, datetime.date) else "a number"
    return f" (YAML reads it as {kind}: put the value in quotes)"


class RecipeParser(TrlParser):
    """``TrlParser`` that reads ``--config`` in any encoding, checks its values' types, errs in one line."""

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
            env = values.pop("env", None) or {}
            if not isinstance(env, dict):
                fail(f"--config {path}: env must be a mapping of variable names to values; got {_shown(env)}.")
            for key, value in env.items():  # TRL's `env:` section
                os.environ[str(key)] = str(value)
            # Before they become argparse defaults, which argparse neither converts nor checks.
            values = check_config_types(path, values, self.dataclass_types)
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
    "check_config_types",
    "check_model_option",
    "exit_on_user_error",
    "fail",
    "make_parser",
    "parse",
    "start",
]
