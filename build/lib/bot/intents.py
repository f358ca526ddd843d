"""Intent classification: which intent a free-text message means, and how sure that is.

Two linear models from scikit-learn, trained on the examples, vote on every message:

- a linear SVM on TF-IDF features of words (1-2) and characters (2-5), which is sharp on the
  words the examples use and tolerant of typos;
- a logistic regression on the message's meaning: the IDF-weighted mean of static word-piece
  vectors distilled from a sentence-embedding model (bot/static_vectors.py), which knows that
  "tech" and "technician", or "come by" and "visit", are close.

The two make different mistakes: together they reach 94.5 % in-scope accuracy and 56 %
out-of-scope recall on CLINC150 (bench/intents.py), which neither does alone (about 92.7 %),
and they classify a message in a fraction of a millisecond. Their scores are summed with fixed
weights and a softmax turns them into confidences, so a threshold can tell "none of these"
(out of scope) from a weak guess. A built-in background class of everyday group-chat lines
("thanks", "see you at 5") gives people talking among themselves somewhere to go.

A trained model is cached on disk under a name made from the examples' hash, so a restart with
unchanged examples loads it instead of training. Only training needs scikit-learn, and with a
cache it runs in a process of its own: the bot classifies with numpy alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import itertools
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import structlog

from bot import static_vectors

log = structlog.get_logger("groupbot.intents")

MODEL_VERSION = 3  # part of the cache key: a new model never loads an old file
BACKGROUND = "__background__"
# How much each model's scores count before the softmax; tuned on CLINC150's validation split.
WORDS_WEIGHT = 3.5
MEANING_WEIGHT = 0.8
TOP = 5
BACKGROUND_EXAMPLES = (
    "thanks", "thank you", "ok", "okay thanks", "great", "sounds good", "see you later",
    "see you at 5", "good morning everyone", "hi all", "hello", "lol", "haha", "yes", "no",
    "sure", "got it", "perfect", "talk soon", "have a nice day", "👍", "will do", "on it",
    "no problem", "cool", "nice", "bye", "good night", "morning", "agreed",
    # What people in a group say to each other, days and plans included, so that a day or a
    # "can we" alone does not make a request.
    "who is coming to the party tomorrow", "can we get pizza on friday", "see you tomorrow",
    "are we still on for lunch", "happy birthday", "running 5 minutes late", "on my way",
    "where should we meet", "what time works for everyone", "i'll be there at noon",
    "did you see the game", "can you send me the photo", "let's talk monday",
    "how was your weekend", "i'm at the store, need anything", "traffic is terrible today",
    "congrats on the new job", "it's raining again", "enjoy your vacation",
    "can someone pick up the kids", "dinner at 7 tonight?", "let me check and get back to you",
    "sorry, wrong chat", "i'll call you later", "good luck with the exam",
)  # fmt: skip


Floats = npt.NDArray[np.float32]
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
TRAIN_SECONDS = 600.0  # most a training process may take before the bot trains in-process


def words(text: str) -> list[str]:
    """The words of two letters or more, lowercased, and each pair of neighbours: scikit-
    learn's word analyzer with ngram_range (1, 2), written out so that a trained model is
    used without importing scikit-learn (tests/test_intents.py checks that they agree)."""
    tokens: list[str] = _TOKEN.findall(text.lower())
    return tokens + [f"{first} {second}" for first, second in itertools.pairwise(tokens)]


def characters(text: str) -> list[str]:
    """Runs of 2 to 5 characters within each lowercased word padded with a space; a word too
    short for a length counts once, whole: scikit-learn's char_wb analyzer, written out."""
    grams: list[str] = []
    for word in text.lower().split():
        padded = f" {word} "
        for n in range(2, 6):
            if len(padded) <= n:
                grams.append(padded)
                break
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


ANALYZERS = (words, characters)


@dataclass(frozen=True, eq=False)  # arrays: compared by identity
class IntentClassifier:
    """The two models' weights, read straight from their vocabularies (a dictionary lookup
    per n-gram) rather than through scikit-learn's transform, which costs more per single
    message than the whole classification. Trained with `train`, the only part that needs
    scikit-learn; a saved model loads with numpy alone."""

    classes: list[str]
    vocabularies: tuple[dict[str, int], ...]  # per analyzer: n-gram -> row of word_weights
    idf: Floats  # per row of word_weights
    word_weights: Floats  # n-grams x classes
    word_bias: Floats
    meaning_weights: Floats  # vector dimensions x classes
    meaning_bias: Floats
    piece_idf: Floats
    vectors_digest: str
    keep: npt.NDArray[np.bool_] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", np.array([c != BACKGROUND for c in self.classes]))

    @classmethod
    def train(cls, intents: Mapping[str, Sequence[str]]) -> IntentClassifier:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        texts = [text for examples in intents.values() for text in examples]
        labels = [name for name, examples in intents.items() for _ in examples]
        texts += BACKGROUND_EXAMPLES
        labels += [BACKGROUND] * len(BACKGROUND_EXAMPLES)
        vectorizers = [
            TfidfVectorizer(analyzer=words, sublinear_tf=True),
            TfidfVectorizer(analyzer=characters, sublinear_tf=True, min_df=2),
        ]
        features = sparse.hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        svm = LinearSVC(C=1.0).fit(features, labels)
        vectors = static_vectors.load()
        pieces = [vectors.pieces(text) for text in texts]
        piece_idf = _piece_idf(pieces, vectors.size)
        meanings = np.stack([vectors.embed(p, piece_idf) for p in pieces])
        meaning = LogisticRegression(C=10.0, max_iter=1000).fit(meanings, labels)

        vocabularies, offset = [], 0
        for vectorizer in vectorizers:
            vocabulary = {
                str(gram): offset + int(row) for gram, row in vectorizer.vocabulary_.items()
            }
            vocabularies.append(vocabulary)
            offset += len(vocabulary)
        word_weights, word_bias = _columns(svm.coef_, svm.intercept_, binary="signed")
        meaning_weights, meaning_bias = _columns(meaning.coef_, meaning.intercept_, binary="logit")
        return cls(
            classes=[str(c) for c in svm.classes_],
            vocabularies=tuple(vocabularies),
            idf=np.concatenate([v.idf_ for v in vectorizers]).astype(np.float32),
            word_weights=word_weights,
            word_bias=word_bias,
            meaning_weights=meaning_weights,
            meaning_bias=meaning_bias,
            piece_idf=piece_idf,
            vectors_digest=vectors.digest,
        )

    def scores(self, text: str) -> list[tuple[str, float]]:
        """The likeliest intents with their confidence (0-1), best first; the background
        class is left out, so its weight shows as low confidence in the others."""
        logits = WORDS_WEIGHT * self._word_margins(text) + MEANING_WEIGHT * self._meaning(text)
        weights = np.exp(logits - logits.max())
        confidence = weights / weights.sum()
        best = np.argsort(confidence)[::-1][: TOP + 1]
        ranked = [(self.classes[i], float(confidence[i])) for i in best if self.keep[i]]
        return ranked[:TOP]

    def _word_margins(self, text: str) -> Floats:
        margins = self.word_bias.copy()
        for analyze, vocabulary in zip(ANALYZERS, self.vocabularies, strict=True):
            counts = Counter(analyze(text))
            known = [(vocabulary[gram], n) for gram, n in counts.items() if gram in vocabulary]
            if not known:
                continue
            rows = np.array([row for row, _ in known])
            # Sublinear TF times IDF, normalised per analyzer, as each vectorizer does.
            values = np.array([1 + math.log(n) for _, n in known], np.float32) * self.idf[rows]
            values /= np.linalg.norm(values)
            margins += values @ self.word_weights[rows]
        return margins

    def _meaning(self, text: str) -> Floats:
        vectors = static_vectors.load()
        vector = vectors.embed(vectors.pieces(text), self.piece_idf)
        result: Floats = vector @ self.meaning_weights + self.meaning_bias
        return result

    def save(self, file: IO[bytes]) -> None:
        """As arrays and JSON text (UTF-8 bytes) in an .npz file: nothing in it runs code
        when loaded."""
        np.savez(
            file,
            classes=_utf8_json(self.classes),
            vocabularies=_utf8_json(self.vocabularies),
            idf=self.idf,
            word_weights=self.word_weights,
            word_bias=self.word_bias,
            meaning_weights=self.meaning_weights,
            meaning_bias=self.meaning_bias,
            piece_idf=self.piece_idf,
            vectors_digest=np.array(self.vectors_digest),
        )

    @classmethod
    def load(cls, file: IO[bytes]) -> IntentClassifier:
        with np.load(file, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        return cls(
            classes=json.loads(arrays.pop("classes").tobytes()),
            vocabularies=tuple(json.loads(arrays.pop("vocabularies").tobytes())),
            vectors_digest=str(arrays.pop("vectors_digest")),
            **{name: array.astype(np.float32, copy=False) for name, array in arrays.items()},
        )


def _utf8_json(value: object) -> npt.NDArray[np.uint8]:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), np.uint8)


def _columns(
    coef: npt.NDArray[Any], intercept: npt.NDArray[Any], *, binary: str
) -> tuple[Floats, Floats]:
    """A linear model's weights as (features x classes) and its biases; with two classes
    scikit-learn keeps one column, which becomes two: -m and m for an SVM's margin, 0 and z
    for a logistic regression's logit."""
    weights, bias = coef.T.astype(np.float32), np.atleast_1d(intercept).astype(np.float32)
    if weights.shape[1] == 1:
        low = -1.0 if binary == "signed" else 0.0
        weights, bias = np.hstack([low * weights, weights]), np.array([low * bias[0], bias[0]])
    return np.ascontiguousarray(weights, np.float32), bias.astype(np.float32)


def _piece_idf(pieces: Sequence[Sequence[int]], size: int) -> Floats:
    """Smoothed IDF of each word piece over the examples (unseen pieces weigh the most)."""
    frequency = np.zeros(size, np.float32)
    for row in pieces:
        frequency[list(set(row))] += 1
    idf: Floats = (np.log((1 + len(pieces)) / (1 + frequency)) + 1).astype(np.float32)
    return idf


def cache_key(intents: Mapping[str, Sequence[str]]) -> str:
    """A name for the model of these examples, with everything else that shapes it: a model
    trained by other code or another scikit-learn never loads."""
    canonical = json.dumps(
        {
            "version": MODEL_VERSION,
            "sklearn": importlib.metadata.version("scikit-learn"),  # without importing it
            "numpy": np.__version__,
            "background": BACKGROUND_EXAMPLES,
            "weights": [WORDS_WEIGHT, MEANING_WEIGHT],
            "vectors": static_vectors.load().digest,
            "intents": {k: list(v) for k, v in sorted(intents.items())},
        },
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Loaded:
    classifier: IntentClassifier
    trained: bool  # False: loaded from the cache
    seconds: float


def load_or_train(intents: Mapping[str, Sequence[str]], cache_dir: Path | None) -> Loaded:
    """The classifier for these examples: from the cache when they are unchanged, else
    trained and cached.

    With a cache, training runs in a process of its own, which hands the model back: scikit-
    learn and SciPy (about 100 MB of modules, which Python never unloads) stay out of the
    bot, which only needs numpy to classify. A cache that cannot be read or written, or a
    training process that fails, is a warning, never a failure: the bot then trains
    in-process."""
    started = time.perf_counter()
    path = cache_dir / f"intents-{cache_key(intents)}.npz" if cache_dir else None
    if path is not None and (classifier := _load(path)) is not None:
        return Loaded(classifier, trained=False, seconds=time.perf_counter() - started)
    classifier = _train_apart(intents) if path is not None else None
    if classifier is None:
        classifier = IntentClassifier.train(intents)
    if path is not None:
        _save(path, classifier)
    seconds = time.perf_counter() - started
    log.info("intents_trained", intents=len(intents), seconds=round(seconds, 2))
    return Loaded(classifier, trained=True, seconds=seconds)


def _train_apart(intents: Mapping[str, Sequence[str]]) -> IntentClassifier | None:
    """The model trained by a child process (`python -m bot.intents`: the examples as JSON
    on its standard input, the model's .npz on its standard output), or None if it failed."""
    try:
        done = subprocess.run(
            # -P: the module is found where this process found it, never in the folder the
            # bot happens to run in.
            [sys.executable, "-P", "-m", "bot.intents"],
            input=json.dumps(intents, ensure_ascii=False).encode(),
            capture_output=True,
            timeout=TRAIN_SECONDS,
            check=False,
        )
        if done.returncode == 0:
            return IntentClassifier.load(io.BytesIO(done.stdout))
        problem = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
    except Exception as exc:  # could not start, too slow, or no model came back
        problem = [f"{type(exc).__name__}: {exc}"]
    log.warning("intents_training_process_failed", error=problem)
    return None


def _load(path: Path) -> IntentClassifier | None:
    try:
        file = path.open("rb")
    except OSError:
        return None
    with file:
        # A model decides where messages go: only a file this user wrote, that nobody else
        # may change (checked on the file opened, not on its name).
        info = os.fstat(file.fileno())
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("intents_cache_untrusted", path=str(path))
            return None
        try:
            return IntentClassifier.load(file)
        except Exception:
            log.warning("intents_cache_unreadable", path=str(path))
            return None


def _save(path: Path, classifier: IntentClassifier) -> None:
    partial: Path | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A file of its own per writer, renamed into place: processes training at once
        # never trip over each other, and a crash never leaves half a model.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as f:
            partial = Path(f.name)
            classifier.save(f)
        partial.replace(path)
        partial = None
        for legacy in path.parent.glob("intents-*.pickle"):  # models of the former format
            legacy.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("intents_cache_not_written", path=str(path), error=str(exc))
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def _main() -> None:
    """Train on the examples read as JSON from standard input; write the model to standard
    output. Anything else printed goes to standard error, so that only the model is read."""
    model = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    intents: dict[str, list[str]] = json.loads(sys.stdin.buffer.read())
    with model:
        IntentClassifier.train(intents).save(model)


if __name__ == "__main__":
    _main()
