"""Runnable recipes: ``python -m recipes.<name>`` or ``llama-unsloth <name>``."""

# Recipe name on the command line -> module under recipes/ (each has a main(argv)).
RECIPES = {
    "finetune": "recipes.finetune",
    "index": "recipes.index",
    "query": "recipes.query",
    "batch": "recipes.batch",
    "compare": "recipes.compare",
    "demo": "recipes.demo",
    "demo-finetune": "recipes.demo_finetune",
    "export": "recipes.export",
}
