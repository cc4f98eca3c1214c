"""GPU plumbing of every recipe for gemma2-27b (reduced depth; see tests/recipes/gpu_architectures.py)."""

import pytest

from tests.recipes.gpu_architectures import *  # noqa: F403 - the shared steps, run for this architecture

pytestmark = pytest.mark.gpu
ARCH = "gemma2-27b"
WEIGHTS = "nf4"
