"""recipes.options: the options query, batch and compare share are one definition, with the same defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes._helpers import DATA


def _parsed(module: str, argv: list) -> dict:
    import importlib

    from recipes.config import parse

    recipe = importlib.import_module(module)
    return {type(options).__name__: options for options in parse(recipe.make_parser(), argv)}


def test_query_batch_and_compare_parse_the_same_shared_options() -> None:
    from llama_unsloth import defaults

    common = [
        "--povs",
        str(DATA / "povs.txt"),
        "--query-top-n",
        "6",
        "--top-n",
        "2",
        "--max-new-tokens",
        "64",
        "--persist-dir",
        "db",
        "--collection",
        "docs",
        "--prompt-format",
        "alpaca-context",
    ]
    parsed = [
        _parsed("recipes.query", ["--question", "q", *common]),
        _parsed("recipes.batch", ["--questions", "q.txt", *common]),
        _parsed("recipes.compare", ["--questions", "q.txt", *common]),
    ]
    for shared in ("IndexOptions", "RetrievalOptions", "ModelOptions"):
        values = [vars(p[shared]) for p in parsed]
        assert values[0] == values[1] == values[2], shared
    retrieval, model = parsed[1]["RetrievalOptions"], parsed[1]["ModelOptions"]
    assert (retrieval.query_top_n, retrieval.top_n, model.max_new_tokens, model.layout.name) == (
        6,
        2,
        64,
        "alpaca-context",
    )
    # Defaults: the SPEC's retrieval sizes, from the one module that holds them.
    plain = _parsed("recipes.batch", ["--questions", "q.txt"])
    assert (
        (plain["RetrievalOptions"].query_top_n, plain["RetrievalOptions"].top_n)
        == (defaults.QUERY_TOP_N, defaults.POV_TOP_N)
        == (10, 5)
    )
    assert plain["IndexOptions"].persist_dir == defaults.PERSIST_DIR and plain["ModelOptions"].max_seq_length == 2048


def test_batch_reranks_with_the_query_top_n_and_top_n_it_is_given(tmp_path: Path) -> None:
    """batch used to ignore these (only query had them): now the POV reranker it builds keeps exactly top_n."""
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from postprocessors import POVReranker
    from tests.recipes._helpers import embed_model

    retrieval = _parsed(
        "recipes.batch",
        ["--questions", "q.txt", "--povs", str(DATA / "povs.txt"), "--query-top-n", "4", "--top-n", "2"],
    )["RetrievalOptions"]
    steps = retrieval.postprocessors(embed_model())
    reranker = next(p for p in steps if isinstance(p, POVReranker))
    assert (reranker.query_top_n, reranker.top_n) == (4, 2)
    nodes = [
        NodeWithScore(
            node=TextNode(text=f"Chunk {i} about tariffs and customs unions number {i}."), score=1.0 - i / 10
        )
        for i in range(8)
    ]
    for step in steps:
        nodes = step.postprocess_nodes(nodes, query_bundle=QueryBundle("What limits trade?"))
    assert len(nodes) == 2


@pytest.mark.parametrize("module", ["recipes.query", "recipes.batch", "recipes.compare"])
def test_rules_between_shared_options_hold_in_every_recipe(module: str, capsys: pytest.CaptureFixture) -> None:
    first = {"recipes.query": ["--question", "q"], "recipes.batch": ["--questions", "q.txt"], "recipes.compare": []}[
        module
    ]
    with pytest.raises(SystemExit) as exit_:
        _parsed(module, [*first, "--top-n", "8", "--query-top-n", "4"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: --top-n (8) must not exceed --query-top-n (4): POV scoring keeps a subset of the query-ranked chunks.\n"
    )
