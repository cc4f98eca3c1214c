"""Exporting a fine-tune for other engines: a GGUF (llama.cpp, LM Studio) and an Ollama Modelfile.

* :mod:`~llama_unsloth.export.gguf`: :func:`export_gguf` (checks, adapter merge, conversion, metadata check).
* :mod:`~llama_unsloth.export.converter`: llama.cpp's converter from the pinned llama-cpp-python sdist, and
  its quantizer.
* :mod:`~llama_unsloth.export.ollama`: the Modelfile (the layout as a Go template, stops, system text).
* :mod:`~llama_unsloth.export.skeleton`: a layout's prompt as pieces, and its chat template.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.errors import ExportError
from llama_unsloth.export.converter import LLAMA_CPP_PYTHON_VERSION, converter_dir, fetch_converter
from llama_unsloth.export.gguf import (
    GGUF_FOLDER,
    QUANTIZATIONS,
    ExportPlan,
    ExportResult,
    export_gguf,
    gguf_name,
    plan_export,
    read_gguf_metadata,
    run_export,
)
from llama_unsloth.export.ollama import MODELFILE, go_template, modelfile_text, write_modelfile
from llama_unsloth.export.skeleton import (
    PromptSkeleton,
    end_token,
    end_tokens,
    layout_chat_template,
    prompt_skeleton,
)

__all__ = [
    "GGUF_FOLDER",
    "LLAMA_CPP_PYTHON_VERSION",
    "MODELFILE",
    "QUANTIZATIONS",
    "ExportError",
    "ExportPlan",
    "ExportResult",
    "PromptSkeleton",
    "converter_dir",
    "end_token",
    "end_tokens",
    "export_gguf",
    "fetch_converter",
    "gguf_name",
    "go_template",
    "layout_chat_template",
    "modelfile_text",
    "plan_export",
    "prompt_skeleton",
    "read_gguf_metadata",
    "run_export",
    "write_modelfile",
]
