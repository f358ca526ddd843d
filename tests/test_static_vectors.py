"""bot/static_vectors.py: the shipped word-piece vectors, and what they add to intents."""

from __future__ import annotations

import numpy as np

from bot import static_vectors
from bot.intents import IntentClassifier


def similarity(a: str, b: str) -> float:
    vectors = static_vectors.load()
    flat = np.ones(vectors.size, np.float32)
    return float(vectors.embed(vectors.pieces(a), flat) @ vectors.embed(vectors.pieces(b), flat))


def test_the_shipped_table_has_a_unit_vector_per_word_piece() -> None:
    vectors = static_vectors.load()

    assert vectors.codes.shape == (vectors.tokenizer.get_vocab_size(), 384)
    norms = np.linalg.norm(vectors.rows(range(vectors.size)), axis=1)
    assert np.allclose(norms, 1.0, atol=0.01)  # int8 with a scale per row
    assert len(vectors.digest) == 16


def test_words_of_like_meaning_are_closer_than_unrelated_ones() -> None:
    assert similarity("tech", "technician") > similarity("tech", "pizza") + 0.3
    assert similarity("technician", "mechanic") > similarity("technician", "pizza") + 0.2
    assert similarity("fees", "cost") > similarity("fees", "park") + 0.3


def test_an_empty_message_has_a_zero_vector() -> None:
    vectors = static_vectors.load()
    assert not vectors.embed(vectors.pieces(""), np.ones(3, np.float32)).any()


def test_a_paraphrase_sharing_no_word_with_the_examples_finds_its_intent() -> None:
    classifier = IntentClassifier.train(
        {
            "cost": ["how much does it cost", "what is the price", "how expensive is it"],
            "visit": ["book an appointment", "schedule a visit", "set up a time to come over"],
        }
    )

    assert classifier.scores("what are your fees")[0][0] == "cost"
    assert classifier.scores("can the technician drop by tomorrow")[0][0] == "visit"
