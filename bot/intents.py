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
unchanged examples loads it instead of training.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import stat
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
import structlog
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from bot import static_vectors

log = structlog.get_logger("groupbot.intents")

MODEL_VERSION = 2  # part of the cache key: a new model never loads an old file
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


class IntentClassifier:
    """Trained with `train`; `scores` reads features straight from the fitted vocabularies
    (a dictionary lookup per n-gram) rather than through scikit-learn's transform, which
    costs more per single message than the whole classification."""

    def __init__(
        self,
        vectorizers: list[TfidfVectorizer],
        svm: LinearSVC,
        meaning: LogisticRegression,
        piece_idf: Floats,
        vectors_digest: str,
    ) -> None:
        self.vectorizers = vectorizers
        self.classes = [str(c) for c in svm.classes_]
        self.keep = np.array([c != BACKGROUND for c in self.classes])
        self.word_weights, self.word_bias = _columns(svm.coef_, svm.intercept_, binary="signed")
        self.meaning_weights, self.meaning_bias = _columns(
            meaning.coef_, meaning.intercept_, binary="logit"
        )
        self.offsets = np.cumsum([0] + [len(v.vocabulary_) for v in vectorizers])[:-1].tolist()
        self.idfs = [v.idf_.astype(np.float32) for v in vectorizers]
        self.piece_idf = piece_idf
        self.vectors_digest = vectors_digest
        self._analyzers = [v.build_analyzer() for v in vectorizers]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_analyzers"]  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._analyzers = [v.build_analyzer() for v in self.vectorizers]

    @classmethod
    def train(cls, intents: Mapping[str, Sequence[str]]) -> IntentClassifier:
        texts = [text for examples in intents.values() for text in examples]
        labels = [name for name, examples in intents.items() for _ in examples]
        texts += BACKGROUND_EXAMPLES
        labels += [BACKGROUND] * len(BACKGROUND_EXAMPLES)
        vectorizers = [
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        ]
        words = sparse.hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
        svm = LinearSVC(C=1.0).fit(words, labels)
        vectors = static_vectors.load()
        pieces = [vectors.pieces(text) for text in texts]
        piece_idf = _piece_idf(pieces, len(vectors.table))
        meanings = np.stack([vectors.embed(p, piece_idf) for p in pieces])
        meaning = LogisticRegression(C=10.0, max_iter=1000).fit(meanings, labels)
        return cls(vectorizers, svm, meaning, piece_idf, vectors.digest)

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
        parts = zip(self._analyzers, self.vectorizers, self.idfs, self.offsets, strict=True)
        for analyze, vectorizer, idf, offset in parts:
            counts = Counter(analyze(text))
            vocabulary = vectorizer.vocabulary_
            known = [(vocabulary[gram], n) for gram, n in counts.items() if gram in vocabulary]
            if not known:
                continue
            columns = np.array([column for column, _ in known])
            values = np.array([1 + math.log(n) for _, n in known], np.float32) * idf[columns]
            values /= np.linalg.norm(values)
            margins += values @ self.word_weights[columns + offset]
        return margins

    def _meaning(self, text: str) -> Floats:
        vectors = static_vectors.load()
        vector = vectors.embed(vectors.pieces(text), self.piece_idf)
        result: Floats = vector @ self.meaning_weights + self.meaning_bias
        return result


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
            "sklearn": sklearn.__version__,
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
    trained (and cached). A cache that cannot be read or written is a warning, never a
    failure: training is always the way back."""
    started = time.perf_counter()
    path = cache_dir / f"intents-{cache_key(intents)}.pickle" if cache_dir else None
    if path is not None and (classifier := _load(path)) is not None:
        return Loaded(classifier, trained=False, seconds=time.perf_counter() - started)
    classifier = IntentClassifier.train(intents)
    if path is not None:
        _save(path, classifier)
    seconds = time.perf_counter() - started
    log.info("intents_trained", intents=len(intents), seconds=round(seconds, 2))
    return Loaded(classifier, trained=True, seconds=seconds)


def _load(path: Path) -> IntentClassifier | None:
    try:
        info = path.stat()
    except OSError:
        return None
    # Unpickling runs code: only a file this user wrote, that nobody else may change.
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("intents_cache_untrusted", path=str(path))
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a model from another scikit-learn is not used
            classifier = pickle.loads(path.read_bytes())  # noqa: S301 - checked above
    except Exception:
        log.warning("intents_cache_unreadable", path=str(path))
        return None
    return classifier if isinstance(classifier, IntentClassifier) else None


def _save(path: Path, classifier: IntentClassifier) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A file of its own per writer, renamed into place: processes training at once
        # never trip over each other, and a crash never leaves half a model.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as f:
            f.write(pickle.dumps(classifier))
        Path(f.name).replace(path)
    except OSError as exc:
        log.warning("intents_cache_not_written", path=str(path), error=str(exc))
