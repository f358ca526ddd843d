"""bot/intents.py: the classifier, and its cache on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from bot.intents import BACKGROUND, IntentClassifier, cache_key, characters, load_or_train, words

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
    assert [p.name for p in tmp_path.iterdir()] == [f"intents-{cache_key(INTENTS)}.npz"]


def test_a_model_of_the_former_format_is_removed_once_a_new_one_is_saved(
    tmp_path: Path,
) -> None:
    legacy = tmp_path / "intents-0123456789abcdef01234567.pickle"
    legacy.write_bytes(b"a pickled model, never read")

    load_or_train(INTENTS, tmp_path)

    assert not legacy.exists()
    assert [p.name for p in tmp_path.iterdir()] == [f"intents-{cache_key(INTENTS)}.npz"]


def test_changed_examples_train_again(tmp_path: Path) -> None:
    load_or_train(INTENTS, tmp_path)
    changed = {**INTENTS, "billing": ["how much do i owe", "send me the invoice"]}

    loaded = load_or_train(changed, tmp_path)

    assert loaded.trained
    assert cache_key(changed) != cache_key(INTENTS)
    assert (tmp_path / f"intents-{cache_key(changed)}.npz").is_file()


def test_a_cache_file_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    load_or_train(INTENTS, tmp_path)
    cached = tmp_path / f"intents-{cache_key(INTENTS)}.npz"
    cached.chmod(0o666)

    assert load_or_train(INTENTS, tmp_path).trained  # retrained, the file not read


def test_a_cache_that_cannot_be_written_is_no_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the folder should be")

    loaded = load_or_train(INTENTS, blocked)

    assert loaded.trained
    assert loaded.classifier.scores("book a visit")[0][0] == "book_visit"


def test_an_unreadable_cache_file_is_trained_over(tmp_path: Path) -> None:
    (tmp_path / f"intents-{cache_key(INTENTS)}.npz").write_bytes(b"not a model")

    loaded = load_or_train(INTENTS, tmp_path)

    assert loaded.trained
    assert loaded.classifier.scores("book a visit")[0][0] == "book_visit"


@given(st.text())
def test_the_analyzers_cut_text_as_scikit_learn_s_own_do(text: str) -> None:
    sklearn_words = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()
    sklearn_characters = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()

    assert words(text) == sklearn_words(text)
    assert characters(text) == sklearn_characters(text)


def test_a_saved_model_scores_as_the_trained_one(tmp_path: Path) -> None:
    trained = IntentClassifier.train(INTENTS)
    with (tmp_path / "model.npz").open("wb") as file:
        trained.save(file)

    with (tmp_path / "model.npz").open("rb") as file:
        loaded = IntentClassifier.load(file)

    for text in ("when do you close", "can someone come by", "thanks!", "", "🙂 ok"):
        assert loaded.scores(text) == trained.scores(text)


BOT_PROCESS = """
import json, sys
from pathlib import Path
from bot.intents import load_or_train
loaded = load_or_train(json.loads(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({
    "trained": loaded.trained,
    "best": loaded.classifier.scores("when do you close")[0][0],
    "sklearn": "sklearn" in sys.modules,
    "scipy": "scipy" in sys.modules,
}))
"""


def in_a_bot_process(cache: Path, cwd: Path) -> dict[str, object]:
    """load_or_train in a fresh process started as `groupbot` is (-P: not from its folder)."""
    done = subprocess.run(  # noqa: S603 - this interpreter
        [sys.executable, "-P", "-c", BOT_PROCESS, json.dumps(INTENTS), str(cache)],
        capture_output=True,
        check=True,
        cwd=cwd,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])  # after the log
    return result


def test_the_bot_s_process_never_imports_scikit_learn_training_or_loading(
    tmp_path: Path,
) -> None:
    # Trained by a process of its own, then loaded from the cache: never in the bot's.
    expected = {"best": "opening_hours", "sklearn": False, "scipy": False}
    assert in_a_bot_process(tmp_path, tmp_path) == {"trained": True, **expected}
    assert in_a_bot_process(tmp_path, tmp_path) == {"trained": False, **expected}

    # Also when the cache cannot be written, and when the bot runs in a folder holding a
    # package of the same name (the training process must not import that one).
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    (tmp_path / "bot").mkdir()
    (tmp_path / "bot" / "__init__.py").write_text("raise ImportError('not groupbot')")
    assert in_a_bot_process(blocked, tmp_path) == {"trained": True, **expected}
