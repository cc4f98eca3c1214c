"""GPU plumbing of every recipe for phi3-medium-14b (reduced depth; see tests/recipes/gpu_architectures.py)."""

import pytest

from tests.recipes.gpu_architectures import *  # noqa: F403 - the shared steps, run for this architecture

pytestmark = pytest.mark.gpu
ARCH = "phi3-medium-14b"
WEIGHTS = "bf16"
