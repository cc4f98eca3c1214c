"""Export a fine-tune to GGUF (llama.cpp, LM Studio) with an Ollama Modelfile, in the layout it was trained on.

Commands:
    llama-unsloth export out/merged --gguf q8_0          # out/merged/gguf/model-q8_0.gguf + Modelfile
    llama-unsloth export out/merged --gguf f16 --output_dir exported/
    llama-unsloth export out --gguf q4_k_m               # an adapter folder: merged into its base first
    make serve-env && llama-unsloth export out/merged --gguf q4_k_m   # q4_k_m needs llama.cpp's quantizer
    ollama create qa -f out/merged/gguf/Modelfile && ollama run qa "What is our refund policy?"
    .venv-serve/bin/python -m llama_cpp.server --model out/merged/gguf/model-q8_0.gguf --model_alias qa --port 8001

FOLDER is the first argument (or --model_dir FOLDER). The conversion is llama.cpp's own
``convert_hf_to_gguf.py``, taken from the pinned llama-cpp-python sdist through pip on first use (77 MB,
kept under the user cache; never a clone of llama.cpp). f16 and q8_0 are the converter's own output types;
q4_k_m quantizes with llama.cpp's quantizer (``llama_cpp``, built into .venv-serve by ``make serve-env``).
The GGUF carries the layout as its chat template and the layout's end token as its EOS; the Modelfile
renders the layout for one prompt (TEMPLATE), with its stop strings and default system text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional


@dataclass
class ExportOptions:
    """What to export, to which quantization, where."""

    model_dir: str = field(
        metadata={"help": "The folder to export (a merged model or a LoRA adapter folder); also the first argument."}
    )
    gguf: Literal["f16", "q8_0", "q4_k_m"] = field(
        default="q8_0",
        metadata={"help": "GGUF quantization: f16, q8_0 (converter only) or q4_k_m (needs `make serve-env`)."},
    )
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder for model-<quant>.gguf and the Modelfile; default: FOLDER/gguf."}
    )
    prompt_format: Optional[str] = field(
        default=None,
        metadata={"help": "Layout to export; default: the folder's prompt_format.json (chat without one)."},
    )


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily
    """The recipe's options: TRL's parser over :class:`ExportOptions`."""
    from recipes.config import make_parser as parser_over

    return parser_over((ExportOptions,), description=__doc__)


def _with_folder_flag(argv: List[str]) -> List[str]:
    """``FOLDER --gguf q8_0`` as ``--model_dir FOLDER --gguf q8_0``: TrlParser's fields are flags only."""
    if argv and not argv[0].startswith("-"):
        return ["--model_dir", argv[0], *argv[1:]]
    return argv


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the export; bad input is one line and exit code 2 before any work."""
    import sys

    from recipes.config import exit_on_user_error, parse

    args = list(sys.argv[1:] if argv is None else argv)
    (options,) = parse(make_parser(), _with_folder_flag(args))
    from llama_unsloth.export import plan_export, run_export
    from llama_unsloth.validation import check_output_location

    def say(line: str) -> None:
        print(line, flush=True)

    with exit_on_user_error():
        if options.output_dir:
            check_output_location(options.output_dir, "--output_dir", folder=True)
        plan = plan_export(options.model_dir, options.gguf, options.output_dir, options.prompt_format, say)
        result = run_export(plan, say)
    print(f"GGUF:      {result.gguf}")
    print(f"Modelfile: {result.modelfile}")
    print(f"Ollama:    ollama create <name> -f {result.modelfile}")
    print(f"llama.cpp: .venv-serve/bin/python -m llama_cpp.server --model {result.gguf} --model_alias <name>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
