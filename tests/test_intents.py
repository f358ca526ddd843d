"""bot/intents.py: the classifier, and its cache on disk."""

from __future__ import annotations

from pathlib import Path

from bot.intents import BACKGROUND, IntentClassifier, cache_key, load_or_train

INTENTS = {
    "book_visit": [
        "can the technician come tomorrow",
        "book a visit for friday",
        "could someone come out to fix it",
        "please schedule a repair",
    ],
    "opening_hours": [
        "when are you open",
        "what are your opening hours",
        "are you open on sunday",
        "what time do you close",
    ],
}


def test_scores_rank_the_likeliest_intent_first_with_a_confidence() -> None:
    classifier = IntentClassifier.train(INTENTS)

    scores = classifier.scores("can someone come out on friday?")

    assert scores[0][0] == "book_visit"
    assert scores[0][1] > scores[1][1]
    assert all(0.0 <= score <= 1.0 for _, score in scores)
    assert BACKGROUND not in {name for name, _ in scores}


def test_everyday_chat_gets_low_confidence() -> None:
    classifier = IntentClassifier.train(INTENTS)

    [(_, confidence), *_] = classifier.scores("thanks, see you later")

    assert confidence < 0.4


def test_one_intent_alone_still_classifies() -> None:
    classifier = IntentClassifier.train({"book_visit": INTENTS["book_visit"]})

    assert classifier.scores("book a visit for monday")[0][0] == "book_visit"
    assert classifier.scores("ok thanks")[0][1] < classifier.scores("book a visit")[0][1]


def test_unchanged_examples_load_from_the_cache_instead_of_training(tmp_path: Path) -> None:
    first = load_or_train(INTENTS, tmp_path)
    again = load_or_train(INTENTS, tmp_path)

    assert (first.trained, again.trained) == (True, False)
    assert again.classifier.scores("when do you close") == first.classifier.scores(
        "when do you close"
    )
    assert [p.name for p in tmp_path.iterdir()] == [f"intents-{cache_key(INTENTS)}.pickle"]


def test_changed_examples_train_again(tmp_path: Path) -> None:
    load_or_train(INTENTS, tmp_path)
    changed = {**INTENTS, "billing": ["how much do i owe", "send me the invoice"]}

    loaded = load_or_train(changed, tmp_path)

    assert loaded.trained
    assert cache_key(changed) != cache_key(INTENTS)
    assert (tmp_path / f"intents-{cache_key(changed)}.pickle").is_file()


def test_a_cache_file_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    load_or_train(INTENTS, tmp_path)
    cached = tmp_path / f"intents-{cache_key(INTENTS)}.pickle"
    cached.chmod(0o666)

    assert load_or_train(INTENTS, tmp_path).trained  # retrained, the file not unpickled


def test_a_cache_that_cannot_be_written_is_no_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the folder should be")

    loaded = load_or_train(INTENTS, blocked)

    assert loaded.trained
    assert loaded.classifier.scores("book a visit")[0][0] == "book_visit"


def test_an_unreadable_cache_file_is_trained_over(tmp_path: Path) -> None:
    (tmp_path / f"intents-{cache_key(INTENTS)}.pickle").write_bytes(b"not a pickle")

    loaded = load_or_train(INTENTS, tmp_path)

    assert loaded.trained
    assert loaded.classifier.scores("book a visit")[0][0] == "book_visit"
