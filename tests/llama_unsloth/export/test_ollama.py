"""The Ollama Modelfile: its Go TEMPLATE renders what render_prompt renders, its stops and SYSTEM are the layout's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from llama_unsloth.export import modelfile_text
from llama_unsloth.layouts import BUILTIN_FORMATS, PromptFormat

pytestmark = pytest.mark.slow

TEMPLATES = Path(__file__).resolve().parents[3] / "examples" / "templates"
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)


def _go_render(template: str, values: Dict[str, str]) -> str:
    """Ollama's Go template for the constructs the Modelfile uses: .System, .Prompt, "literals", one if/else."""
    out: List[str] = []
    skipping: List[bool] = []  # one entry per open {{ if }}: whether its current branch is skipped
    at = 0
    for match in _ACTION.finditer(template):
        if not any(skipping):
            out.append(template[at : match.start()])
        at = match.end()
        action = match.group(1).strip()
        if action.startswith("if "):
            skipping.append(not values.get(action[3:].strip().lstrip("."), ""))
        elif action == "else":
            skipping[-1] = not skipping[-1]
        elif action == "end":
            skipping.pop()
        elif any(skipping):
            continue
        elif action.startswith("."):
            out.append(values[action[1:]])
        else:
            out.append(json.loads(action))  # a Go string literal in JSON's escapes
    if not any(skipping):
        out.append(template[at:])
    return "".join(out)


def _parse(modelfile: str) -> Dict[str, object]:
    """FROM, TEMPLATE, SYSTEM and the stop parameters of a Modelfile."""
    parsed: Dict[str, object] = {"stops": []}
    for key, value in re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', modelfile, re.S | re.M):
        parsed[key] = value
    parsed["FROM"] = re.search(r"^FROM (.+)$", modelfile, re.M).group(1)  # type: ignore[union-attr]
    parsed["stops"] = [json.loads(v) for v in re.findall(r"^PARAMETER stop (.+)$", modelfile, re.M)]
    return parsed


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def _layouts() -> List[str]:
    return [*sorted(BUILTIN_FORMATS), *sorted(str(p) for p in TEMPLATES.glob("*.j2"))]


@pytest.mark.parametrize("name", _layouts(), ids=lambda n: Path(n).stem)
def test_template_renders_the_layout(name: str, tokenizer) -> None:
    fmt = PromptFormat.get(name)
    parsed = _parse(modelfile_text("model-q8_0.gguf", fmt, tokenizer))
    assert parsed["FROM"] == "./model-q8_0.gguf"
    template = str(parsed["TEMPLATE"])
    system: Optional[str] = parsed.get("SYSTEM")  # type: ignore[assignment]
    question = 'What is "x" {{ y }}?\nTell me.'
    # A request without a system text: Ollama fills .System with SYSTEM's text (or nothing).
    assert _go_render(template, {"System": system or "", "Prompt": question}) == fmt.render_prompt(
        question, tokenizer=tokenizer
    )
    # A request with one (a chat engine's system_prompt).
    own = "You answer briefly."
    assert _go_render(template, {"System": own, "Prompt": question}) == fmt.render_prompt(
        question, system=own, tokenizer=tokenizer
    )


@pytest.mark.parametrize("name", _layouts(), ids=lambda n: Path(n).stem)
def test_stops_and_system(name: str, tokenizer) -> None:
    fmt = PromptFormat.get(name)
    parsed = _parse(modelfile_text("m.gguf", fmt, tokenizer))
    stops = parsed["stops"]
    assert isinstance(stops, list)
    for stop in fmt.stop:
        assert stop in stops
    assert tokenizer.eos_token in stops  # <|im_end|>: SmolLM2's EOS and its chat turn end
    for token in fmt.turn_end_tokens(tokenizer):
        assert token in stops
    assert len(stops) == len(set(stops))
    default = fmt.system_for(None, None)
    has_slot = "{{ .System }}" in str(parsed["TEMPLATE"])
    if default and has_slot:
        assert parsed["SYSTEM"] == default
    else:
        assert "SYSTEM" not in parsed


def test_builtin_alpaca_template_text(tokenizer) -> None:
    """The plain case written out: alpaca's system slot is .System, its default in SYSTEM."""
    parsed = _parse(modelfile_text("m.gguf", PromptFormat.get("alpaca"), tokenizer))
    assert parsed["TEMPLATE"] == "{{ .System }}\n\n### Instruction:\n{{ .Prompt }}\n\n### Input:\n\n\n### Response:\n"
    assert "PARAMETER repeat_penalty 1" in modelfile_text("m.gguf", PromptFormat.get("alpaca"), tokenizer)


def test_layout_without_system_slot_branches(tmp_path: Path, tokenizer) -> None:
    """A user's layout with no system slot: a system text goes before the instruction, only when one is given."""
    path = tmp_path / "plain.j2"
    path.write_text("Q: {{ instruction }}\nA: {{ output }}", encoding="utf-8")
    fmt = PromptFormat.from_j2(path)
    parsed = _parse(modelfile_text("m.gguf", fmt, tokenizer))
    assert (
        parsed["TEMPLATE"]
        == "{{ if .System }}Q: {{ .System }}\n\n{{ .Prompt }}\nA: {{ else }}Q: {{ .Prompt }}\nA: {{ end }}"
    )
    assert "SYSTEM" not in parsed
