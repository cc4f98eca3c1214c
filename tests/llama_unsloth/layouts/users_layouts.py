"""Our users' own layouts, verbatim (golden strings copied from the users' texts in SPEC.md), shared by the layouts tests."""

from __future__ import annotations

from pathlib import Path

#: The users' template files shipped in examples/templates.
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "templates"

# ---- The users' layouts, verbatim (typos, hyphenation, trailing spaces included), as the users wrote them.
# 1. Mistral-Nemo fine-tune: alpaca_prompt.format(instruction, input, output); writes its own <s> and </s>
#    (the Python string ends at </s>).
# 2. The RAG variant used at inference: alpaca_prompt.format(instruction, input, context); ends where the answer begins.
# 4. QA_finetune_Instruction_Context_new.j2 (ends with two newlines after {{str_answer}}).
ALPACA_DONT_KNOW = '<s>Below is an instruction that describes a task, paired with an input that pro-vides further context. Write a response that appropriately completes the request. If you have been provided with the context and a question, try to find out the answer to the question only using the context information. If the answer to the question is not found within the context, return "I dont know" as the response.\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Context:\n\n\n### Response:\n{}</s>'
ALPACA_RAG = "<s>You are an excellent AI assistant. Below is an instruction that describes a task, paired with an input that provides further information. The instruction and input are question provided by your user. Write a response appropriately your user's question. \n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Context:\n{}\n\nIf text has been provided in context field (text after '### Context:'), you should refer the information to response. If the answer to the question is not found within the context, you can return \"I dont know\" as the response.\n\n### Response:\n"
INSTRUCTION_CONTEXT_J2 = 'You are a brilliant Iranian professor of political science. Below is an instruction (texts after "### IN-STRUCTION:") that describes a task. The instruction is question provided by your user. Write a re-sponse appropriately your user\'s question. Because very useful texts have been provided in a context (texts after "### CONTEXT:") , you should write your own opinion by using context information as much as possible. If any hint of the answer to the question were not found within the given context, you can return "I don\'t know" as the response. The length of answer should be more than 400 and less than 500 words.\n\n### INSTRUCTION:\n{{str_instruction}}\n\n### CONTEXT:\n{{str_context}}\n\n### RESPONSE:\n{{str_answer}}\n\n'
# 3. The Phi-3 reasoning layout, system message by the record's flag.
SYSTEM_LOGICIAN = 'You are an excellent logician and are instructing users on "thinking proce-dures for providing better quality reasoning to user-provided questions.". '
SYSTEM_CREATOR = "You are creator who create amazing content with your free ideas. You attract readers with your beautiful writing such as novel or advertisement. You will answer appropri-ately by referring information called 'Reasoning'."
SYSTEM_TRANSLATOR = "You are translator who is fluent in multiple languages.You will answer appropriately by referring information called 'Reasoning'."
SYSTEM_ASSISTANT = "You are an AI assistant who is good at providing answers in multiple languages. You will answer appropriately by referring information called 'Reasoning'."
SYSTEMS = {
    "logician": SYSTEM_LOGICIAN,
    "creator": SYSTEM_CREATOR,
    "translator": SYSTEM_TRANSLATOR,
    "poet": SYSTEM_ASSISTANT,
}


def phi3_text(flag: str, instruction: str, input: str, reasoning: str, output: str) -> str:
    """The Phi-3 reasoning training text of one record, as the users built it."""
    system = SYSTEMS.get(flag, SYSTEM_ASSISTANT)
    return f"<s>{system}\n<|instruction|>{instruction}\n<|context|>{input}\n<|reasoning|>{reasoning}\n<|response|>{output}<|endoftext|>"


# A question, its retrieved context and its answer, used across the layouts tests.
Q, CTX, ANS = "What limits trade inside the bloc?", "Rules of origin limit trade.\nTariffs too.", "Rules of origin."
