"""The standard generator's pieces: left padding, one lock per model, counting the tokens of an answer."""

from __future__ import annotations

from llama_unsloth.decoding.generator import count_until_end, left_padded, lock_for


def test_prompts_are_left_padded_with_the_given_id() -> None:
    batch = left_padded([[5, 6, 7], [8]], 0, "cpu")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert left_padded([[5], [6, 7]], None, "cpu")["input_ids"].tolist() == [[0, 5], [6, 7]]


def test_one_lock_per_model() -> None:
    class Model:
        pass

    first, second = Model(), Model()
    assert lock_for(first) is lock_for(first) and lock_for(first) is not lock_for(second)


def test_an_answer_counts_up_to_its_first_end_token_else_all_but_padding() -> None:
    assert count_until_end([4, 5, 2, 9], end_ids=[2], pad_id=0) == 3
    assert count_until_end([4, 5, 0, 0], end_ids=[2], pad_id=0) == 2
