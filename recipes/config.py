"""Command-line configuration for recipes: a dataclass becomes flags, ``--config file.yaml`` sets defaults.

Like TRL's ``HfArgumentParser`` but small: every dataclass field is a ``--flag`` (underscores become
dashes), its ``metadata["help"]`` is the help text, booleans take ``--flag/--no-flag``. Values from
``--config`` (YAML or JSON) replace the defaults; flags given on the command line win over both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, List, Optional, Sequence, Type, TypeVar

T = TypeVar("T")


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return annotation


def _read_config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"--config {path}: file not found.")
    text = file.read_text(encoding="utf-8")
    if file.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise SystemExit(f"--config {path}: expected a mapping of option names to values.")
    return {key.replace("-", "_"): value for key, value in data.items()}


def parse_config(config_class: Type[T], argv: Optional[Sequence[str]] = None, description: str = "") -> T:
    """Parses ``argv`` into an instance of ``config_class`` (a dataclass).

    Args:
        config_class: The recipe's config dataclass.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: Help text shown by ``--help`` (the recipe's docstring).

    Raises:
        SystemExit: Unknown option in ``--config`` or on the command line (argparse prints why).
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
        raise SystemExit(f"--config {known.config}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}.")

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
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) in (list, List):
            item = (typing.get_args(kind) or (str,))[0]
            parser.add_argument(flag, nargs="*", type=item, default=default, help=help_text, required=required)
        else:
            parser.add_argument(flag, type=kind if kind in (int, float) else str, default=default, help=help_text, required=required)
    namespace = vars(parser.parse_args(argv))
    namespace.pop("config", None)
    return config_class(**namespace)
