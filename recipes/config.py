"""Command-line configuration for recipes: a dataclass becomes flags, ``--config file.yaml`` sets defaults.

Like TRL's ``HfArgumentParser`` but small: every dataclass field is a ``--flag`` (underscores become
dashes), its ``metadata["help"]`` is the help text, booleans take ``--flag/--no-flag``. Values from
``--config`` (YAML or JSON) replace the defaults; flags given on the command line win over both.

Options are checked as the command starts, before any model or database loads: a field's
``metadata`` (or the ``rules`` passed to :func:`parse_config`) may hold ``min``/``max`` (inclusive),
``gt`` (exclusive lower bound), ``lt`` (exclusive upper bound), ``choices`` and ``also`` (values
allowed beside the range, e.g. ``-1`` for "no limit"); a config class may define ``check()`` raising
:class:`OptionError` for rules between options. A bad value prints one line (what is wrong, the
allowed range) and exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, TypeVar
from llama_unsloth.errors import OptionError  # noqa: F401 (defined there, re-exported here)

T = TypeVar("T")
RULE_KEYS = ("min", "max", "gt", "lt", "choices", "also")


def flag_name(name: str) -> str:
    """``chunk_size`` -> ``--chunk-size``."""
    return "--" + name.replace("_", "-")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_value(name: str, value: Any, rule: Mapping[str, Any]) -> None:
    """Checks one option against its rule (see the module docstring); ``None`` (unset) always passes.

    Raises:
        OptionError: The value breaks the rule; the message names the flag and the allowed values.
    """
    if value is None or not any(k in rule for k in RULE_KEYS):
        return
    flag = flag_name(name)
    if "choices" in rule:
        choices = list(rule["choices"])
        if value not in choices:
            raise OptionError(f"{flag} must be one of {', '.join(map(str, choices))}; got {value!r}.")
        return
    also = list(rule.get("also", ()))
    if value in also:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise OptionError(f"{flag} must be a number; got {value!r}.")
    bounds = []
    ok = True
    if "min" in rule:
        bounds.append(f">= {_fmt(rule['min'])}")
        ok &= value >= rule["min"]
    if "gt" in rule:
        bounds.append(f"> {_fmt(rule['gt'])}")
        ok &= value > rule["gt"]
    if "max" in rule:
        bounds.append(f"<= {_fmt(rule['max'])}")
        ok &= value <= rule["max"]
    if "lt" in rule:
        bounds.append(f"< {_fmt(rule['lt'])}")
        ok &= value < rule["lt"]
    if not ok:
        allowed = " and ".join(bounds) + (f" (or {', '.join(map(_fmt, also))})" if also else "")
        raise OptionError(f"{flag} must be {allowed}; got {_fmt(value)}.")


def check_config(config: Any, rules: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
    """Checks every field of a parsed config against its metadata rules, ``rules``, then ``config.check()``.

    Raises:
        OptionError: The first bad option.
    """
    merged: Dict[str, Dict[str, Any]] = {}
    for f in dataclasses.fields(config):
        merged[f.name] = {k: f.metadata[k] for k in RULE_KEYS if k in f.metadata}
    for name, rule in (rules or {}).items():
        merged.setdefault(name, {}).update(rule)
    for name, rule in merged.items():
        check_value(name, getattr(config, name, None), rule)
    check = getattr(config, "check", None)
    if callable(check):
        check()


def check_model_option(name: Optional[str], flag: str = "--model") -> None:
    """Refuses a hub id that cannot load here (offline, not cached) before anything loads.

    ``None`` means the default: ``$LLAMA_UNSLOTH_MODEL`` if set (checked the same way), else the bundled model.

    Raises:
        OptionError: One line saying to pass a local folder or set the environment variable.
    """
    import os

    from llama_unsloth.defaults import MODEL_ENV
    from llama_unsloth.hub_check import offline_model_problem

    problem = offline_model_problem(name or os.environ.get(MODEL_ENV), "Model", flag, MODEL_ENV)
    if problem:
        raise OptionError(problem)


def fail(message: str, code: int = 2) -> "typing.NoReturn":
    """Prints ``error: <message>`` as one line on stderr and exits with ``code`` (2: bad usage)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return annotation


def _read_config_file(path: str) -> dict:
    """The option values in a YAML/JSON ``--config`` file (any text encoding); one-line errors, exit 2."""
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
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: say where, in one line
        fail(f"--config {path}: not valid {'YAML' if file.suffix in ('.yaml', '.yml') else 'JSON'} ({' '.join(str(err).split())}).")
    if not isinstance(data, dict):
        fail(f"--config {path}: expected a mapping of option names to values.")
    return {key.replace("-", "_"): value for key, value in data.items()}


def parse_config(
    config_class: Type[T],
    argv: Optional[Sequence[str]] = None,
    description: str = "",
    rules: Optional[Mapping[str, Mapping[str, Any]]] = None,
    check: Optional[Callable[[Any], None]] = None,
) -> T:
    """Parses ``argv`` into an instance of ``config_class`` (a dataclass) and checks every option.

    Args:
        config_class: The recipe's config dataclass.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: Help text shown by ``--help`` (the recipe's docstring).
        rules: Extra per-option rules, option name -> ``{"min": ..., "choices": ...}`` (see the module docstring).
        check: Extra check of the whole config, raising :class:`OptionError` (run after ``config.check()``).

    Raises:
        SystemExit: Unknown option in ``--config`` or on the command line (argparse prints why), or a
            value outside its allowed range (code 2, one line on stderr).
    """
    hints = typing.get_type_hints(config_class)
    fields = [f for f in dataclasses.fields(config_class) if f.init]
    names = {f.name for f in fields}

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    file_values = _read_config_file(known.config) if known.config else {}
    unknown = sorted(set(file_values) - names)
    if unknown:
        fail(f"--config {known.config}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}.")

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file with option values (command-line flags win).")
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        kind = _base_type(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            default = None
        default = file_values.get(field.name, default)
        help_text = field.metadata.get("help", "")
        required = default is None and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING  # type: ignore[misc]
        rule = {**{k: field.metadata[k] for k in RULE_KEYS if k in field.metadata}, **dict((rules or {}).get(field.name, {}))}
        if "choices" in rule and "{" not in help_text:
            help_text += f" One of: {', '.join(map(str, rule['choices']))}."
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) in (list, List):
            item = (typing.get_args(kind) or (str,))[0]
            parser.add_argument(flag, nargs="*", type=item, default=default, help=help_text, required=required)
        else:
            parser.add_argument(flag, type=kind if kind in (int, float) else str, default=default, help=help_text, required=required)
    namespace = vars(parser.parse_args(argv))
    namespace.pop("config", None)
    config = config_class(**namespace)
    try:
        check_config(config, rules)
        if check is not None:
            check(config)
    except OptionError as err:
        fail(str(err))
    return config
