"""Our users' four families now live in :mod:`benchmarks.architectures` (the GPU benchmarks build them too)."""

from benchmarks.architectures import *  # noqa: F401,F403
from benchmarks.architectures import ARCHITECTURES, TOKENIZER_FAMILIES, family_tokenizer  # noqa: F401
