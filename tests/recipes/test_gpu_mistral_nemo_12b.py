"""GPU plumbing of every recipe for mistral-nemo-12b (reduced depth; see tests/recipes/gpu_architectures.py)."""

import pytest

from tests.recipes.gpu_architectures import *  # noqa: F403 - the shared steps, run for this architecture

pytestmark = pytest.mark.gpu
ARCH = "mistral-nemo-12b"
WEIGHTS = "nf4"
