"""Generation constrained to a JSON schema: every token ``generate`` picks keeps the text valid for the schema.

Small models asked for structured output (LlamaIndex's ``structured_predict``) echo the schema or write prose;
constrained decoding masks, at each step, the tokens that cannot continue a JSON document of the schema, so the
answer parses whatever the model's size.

The library is lm-format-enforcer (pinned in requirements/constraints.txt), chosen over xgrammar and outlines:

* it is pure Python and small (itself and ``interegular``; pydantic, packaging and pyyaml we have already), so it
  installs from the registry on every machine, CPU ones included. xgrammar 0.2.9 pulls ``triton`` and
  ``apache-tvm-ffi`` into a CPU install; outlines pulls a compiled ``outlines-core`` and more besides;
* it is the token-level algorithm vLLM ships as one of its guided-decoding backends, and LlamaIndex has a program
  for it, so the same library constrains answers in-process and on a server;
* it works on the character level over any tokenizer's vocabulary: our users' four model families need no per-
  family code.

Its own transformers integration (``lmformatenforcer.integrations.transformers``) imports
``transformers.tokenization_utils``, which transformers 5 removed, so this module builds the tokenizer data
itself (the same recipe) and hands ``generate`` its ``prefix_allowed_tokens_fn``, the hook transformers documents
for this. Nothing here imports transformers: it works on the token ids ``generate`` passes.

Importing lm-format-enforcer changes PyYAML's global ``SafeLoader`` (timestamps read as text): it is imported only
when a structured call is made, and ``recipes.config`` reads ``--config`` files with a loader of its own.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, List, Sequence, Tuple

from llama_unsloth.import_utils import require_lmformatenforcer

# Building the tokenizer data decodes every token of the vocabulary twice (about a second for 49k tokens): done
# once per tokenizer and set of end ids, held weakly with the tokenizer.
_TOKENIZER_DATA: weakref.WeakKeyDictionary[Any, Dict[Tuple[int, ...], Any]] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def _regular_tokens(tokenizer: Any) -> List[Tuple[int, str, bool]]:
    """``(id, text, starts a word)`` for every non-special token, as lm-format-enforcer's tokenizer data wants."""
    # A token's text after another token: a SentencePiece-style tokenizer drops a leading space when the token is
    # decoded alone, and whether it starts a word is exactly that difference.
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    # No clean-up of tokenization spaces: it would strip spaces before punctuation that the model really writes.
    alone = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    pairs = tokenizer.batch_decode([[zero, i] for i in ids], clean_up_tokenization_spaces=False)
    after_zero = [text[1:] for text in pairs]
    return [(i, after, len(after) > len(text)) for i, text, after in zip(ids, alone, after_zero)]


def tokenizer_data(tokenizer: Any, end_ids: Sequence[int]) -> Any:
    """lm-format-enforcer's ``TokenEnforcerTokenizerData`` for ``tokenizer`` (cached per tokenizer and end ids).

    Args:
        tokenizer: A transformers tokenizer.
        end_ids: The ids that end an answer (EOS and the layout's turn end): allowed once the JSON is complete.

    Raises:
        ImportError: lm-format-enforcer is not installed.
    """
    require_lmformatenforcer()
    from lmformatenforcer import TokenEnforcerTokenizerData

    key = tuple(sorted({int(i) for i in end_ids}))
    with _GUARD:
        cached = _TOKENIZER_DATA.setdefault(tokenizer, {})
        if key not in cached:

            def decode(tokens: List[int]) -> str:
                # A partial UTF-8 sequence decodes to U+FFFD until its last byte arrives: not a character yet.
                return str(tokenizer.decode(tokens, clean_up_tokenization_spaces=False)).rstrip("\ufffd")

            cached[key] = TokenEnforcerTokenizerData(
                _regular_tokens(tokenizer), decode, list(key), use_bitmask=False, vocab_size=len(tokenizer)
            )
        return cached[key]


def json_schema_allowed_tokens(
    tokenizer: Any, schema: Dict[str, Any], end_ids: Sequence[int]
) -> Callable[[int, Any], List[int]]:
    """A ``prefix_allowed_tokens_fn`` for ``generate``: only tokens that keep the answer valid for ``schema``.

    Make one per ``generate`` call: it remembers the sequences it has seen (that is how it follows each row of a
    left-padded batch without knowing where the prompt ends), and a later call's prompt could be one of them.

    Args:
        tokenizer: The model's tokenizer.
        schema: A JSON schema (``Model.model_json_schema()``).
        end_ids: The ids that end an answer.

    Raises:
        ImportError: lm-format-enforcer is not installed.
    """
    data = tokenizer_data(tokenizer, end_ids)
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    enforcer = TokenEnforcer(data, JsonSchemaParser(schema))

    def allowed(batch_id: int, input_ids: Any) -> List[int]:
        del batch_id  # the enforcer tells rows apart by their tokens
        return list(enforcer.get_allowed_tokens(input_ids.tolist()).allowed_tokens)

    return allowed


__all__ = ["json_schema_allowed_tokens", "tokenizer_data"]
