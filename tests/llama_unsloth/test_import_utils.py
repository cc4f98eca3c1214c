"""llama_unsloth.import_utils: optional dependencies checked in one place, with the install line to print."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest


def test_unsloth_is_never_imported_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from llama_unsloth import import_utils

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    monkeypatch.chdir(tmp_path)
    assert import_utils.import_unsloth_first(["--model", "m"]) is False
    assert import_utils.import_unsloth_first(["--backend", "transformers"]) is False
    assert "unsloth" not in sys.modules and not os.path.exists("unsloth_compiled_cache")


def test_the_public_api_leaves_transformers_trl_and_peft_unimported_for_unsloth_to_patch_first() -> None:
    """unsloth must be imported before transformers/trl/peft (it patches them, and swaps trl's SFTTrainer):
    importing our API imports none of them, so the Unsloth backend's ``from unsloth import ...`` comes first."""
    import subprocess

    code = (
        "import sys; import llama_unsloth, postprocessors; from llama_unsloth import UnslothLLM; "
        "from postprocessors import POVReranker; import recipes.options; "
        "print(sorted(m for m in ('transformers', 'trl', 'peft') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_missing_extras_name_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_unsloth import import_utils

    monkeypatch.setattr(import_utils, "_installed", lambda module: False)
    with pytest.raises(ImportError) as cohere:
        import_utils.require_cohere("--embed-backend cohere")
    assert str(cohere.value) == '--embed-backend cohere need the cohere extras: pip install "llama-unsloth[cohere]"'
    with pytest.raises(ImportError) as openai:
        import_utils.require_openai()
    assert str(openai.value) == 'ServedLLM needs the openai package: pip install "llama-unsloth[served]"'
    assert import_utils.is_bitsandbytes_available() is False


def test_the_cohere_extras_installed_here_are_seen() -> None:
    from llama_unsloth import import_utils

    # make install puts the [cohere] and [served] extras in the venv: the checks must find them.
    assert import_utils.is_cohere_available() and import_utils.is_openai_available()


# ---------------------------------------------------------------------- pins: the GPU install is the tested one
ROOT = Path(__file__).resolve().parents[2]
GPU_TESTED = ROOT / "requirements" / "gpu-tested.txt"


def _pins(path: Path) -> dict:
    """``name -> version`` of the ``name==version`` lines of a requirements file (names normalized)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _specifiers(specs: list) -> dict:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return {canonicalize_name(Requirement(spec).name): Requirement(spec).specifier for spec in specs}


def test_the_unsloth_extra_pins_the_versions_the_gpu_runs_tested() -> None:
    tested = _pins(GPU_TESTED)
    assert set(tested) == {"unsloth", "unsloth-zoo", "trl", "bitsandbytes", "transformers"}
    project = _project()
    extra = {name: str(spec) for name, spec in _specifiers(project["optional-dependencies"]["unsloth"]).items()}
    # Exact pins, each the tested version; torch is the CUDA machine's own build, so the extra leaves it alone.
    assert extra == {name: f"=={tested[name]}" for name in ("unsloth", "unsloth-zoo", "bitsandbytes", "trl")}
    # The base dependencies admit what the GPU runs used (else pip could not install the extra with them).
    ranges = _specifiers(project["dependencies"])
    assert tested["trl"] in ranges["trl"] and tested["transformers"] in ranges["transformers"]
    # Every GPU run log that names its versions in its header names these.
    for log in sorted((ROOT / "docs" / "gpu-runs").glob("*.log")):
        head = log.read_text(encoding="utf-8").splitlines()[0]
        for name in ("unsloth", "trl"):
            if head.startswith("#") and f"{name} " in head:
                assert f"{name} {tested[name]}" in head, f"{log.name}: {head}"


def test_the_cpu_install_uses_the_gpu_tested_versions_or_says_why_not() -> None:
    tested, cpu = _pins(GPU_TESTED), _pins(ROOT / "requirements" / "constraints.txt")
    ranges = _specifiers(_project()["dependencies"])
    assert cpu["transformers"] == tested["transformers"]
    assert cpu["trl"] in ranges["trl"]
    if cpu["trl"] != tested["trl"]:
        # The difference is recorded, with its reason, where the tested versions are (and in pyproject's comment).
        reason = re.search(r"^# cpu-trl: (\S+) because (.+)$", GPU_TESTED.read_text(encoding="utf-8"), re.M)
        assert reason, (
            f"constraints.txt has trl {cpu['trl']}, GPU runs used {tested['trl']}: say why in {GPU_TESTED.name}"
        )
        assert reason.group(1) == cpu["trl"] and len(reason.group(2)) > 20
        assert f"{cpu['trl']} on CPU" in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_a_trl_that_cannot_train_here_is_one_line_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A plain `pip install` on a CPU machine can bring trl 1.15, whose loss is a Triton kernel: the recipe says
    which trl to install instead of failing at the first step."""
    import importlib.metadata as metadata
    import json

    from llama_unsloth import import_utils
    from tests.recipes._helpers import exit_code

    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "1.15.0" if name == "trl" else real_version(name))
    monkeypatch.setattr(import_utils, "cuda_available", lambda: False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("llama_unsloth.models.loading.load_model", refuse)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    from recipes.finetune import main

    assert exit_code(main, ["--data", str(data), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: trl 1.15.0 fine-tunes only on a CUDA GPU (its SFTTrainer loss is a Triton kernel); on this machine "
        f"install trl {import_utils.CPU_TRL}: pip install 'trl=={import_utils.CPU_TRL}' (make install pins it).\n"
    )
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(metadata, "version", real_version)
    import_utils.require_trainable_trl()  # the pinned CPU trl (1.14.2) passes
