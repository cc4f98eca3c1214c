"""LlamaIndex ``PromptTemplate`` objects written in a layout, one per kind of LlamaIndex prompt.

Each template is the layout's inference prompt with LlamaIndex's variables in its slots: the question
(or the kind's instruction) in the instruction slot, the retrieved text in the context slot. They carry
:data:`LAYOUT_METADATA_KEY`, so the LLM sends them as they are instead of wrapping them in the layout again.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

#: Marks LlamaIndex templates built from a layout: they are sent as they are, never wrapped again.
LAYOUT_METADATA_KEY = "llama_unsloth_layout"

# Instructions of the LlamaIndex prompts that are not a plain question, written into the layout's
# instruction slot (the retrieved text always goes into its context slot).
REFINE_INSTRUCTION = (
    "{query_str}\n\nAn earlier answer, written from other parts of the documents, was:\n"
    "{existing_answer}\nImprove it with the new context if it helps; otherwise repeat it."
)
SUMMARY_INSTRUCTION = "Summarize the context."
CONDENSE_INSTRUCTION = (
    "Rewrite the follow-up message as a standalone question that keeps everything it needs from the "
    "conversation in the context.\nFollow-up message: {question}"
)

#: Per kind of template: the text for the instruction slot, the text for the context slot, and the name
#: of LlamaIndex's ``PromptType``.
TEMPLATE_KINDS: Dict[str, Tuple[str, str, str]] = {
    "qa": ("{query_str}", "{context_str}", "QUESTION_ANSWER"),
    "refine": (REFINE_INSTRUCTION, "{context_msg}", "REFINE"),
    "summary": ("{query_str}", "{context_str}", "SUMMARY"),
    "condense": (CONDENSE_INSTRUCTION, "{chat_history}", "CUSTOM"),
}


def layout_template(kind: str, layout_name: str, render_prompt: Callable[[str, str], str]) -> Any:
    """A LlamaIndex ``PromptTemplate`` of one kind, written in a layout.

    Args:
        kind: ``qa``, ``refine``, ``summary`` or ``condense`` (see :data:`TEMPLATE_KINDS`).
        layout_name: The layout's name, stored in the template's metadata.
        render_prompt: Renders the layout's inference prompt from (instruction, context).

    Returns:
        A ``llama_index.core.prompts.PromptTemplate``.
    """
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.prompts.prompt_type import PromptType

    instruction, context, prompt_type = TEMPLATE_KINDS[kind]
    return PromptTemplate(
        render_prompt(instruction, context),
        prompt_type=PromptType[prompt_type],
        metadata={LAYOUT_METADATA_KEY: layout_name},
    )
