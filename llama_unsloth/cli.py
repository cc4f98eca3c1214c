"""``llama-unsloth <recipe> [options]``: the recipes as one command-line tool."""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional


def _usage() -> str:
    from recipes import RECIPES

    lines = [
        "usage: llama-unsloth <recipe> [options]   (llama-unsloth <recipe> --help for its options)",
        "",
        "recipes:",
    ]
    for name, module in RECIPES.items():
        doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<14} {doc[0] if doc else ''}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the recipe named by the first argument with the remaining arguments."""
    from recipes import RECIPES

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in RECIPES:
        print(f"llama-unsloth: unknown recipe {name!r}; choose one of {', '.join(RECIPES)}.", file=sys.stderr)
        return 2
    result = importlib.import_module(RECIPES[name]).main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
