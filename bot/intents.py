"""Intent classification: which intent a free-text message means, and how sure that is.

The default classifier is scikit-learn's: TF-IDF over words (1-2) and characters (2-5) into a
linear SVM. It is well kept, trains on 15,000 examples in seconds on one core, classifies in
about a millisecond, and beats the hosted NLU platforms on CLINC150 (see bench/intents.py).
Its decision scores become confidences by a softmax, so a threshold can tell "none of these"
(out of scope) from a weak guess. A built-in background class of everyday group-chat lines
("thanks", "see you at 5") gives people talking among themselves somewhere to go.

A trained model is cached on disk under a name made from the examples' hash, so a restart with
unchanged examples loads it instead of training.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
import structlog
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

log = structlog.get_logger("groupbot.intents")

MODEL_VERSION = 1  # part of the cache key: a new model never loads an old file
BACKGROUND = "__background__"
SOFTMAX_SCALE = 10.0  # turns SVM margins into confidences; tuned on CLINC150's validation split
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


@dataclass(frozen=True)
class TfidfClassifier:
    features: FeatureUnion
    svm: LinearSVC

    @classmethod
    def train(cls, intents: Mapping[str, Sequence[str]]) -> TfidfClassifier:
        texts = [text for examples in intents.values() for text in examples]
        labels = [name for name, examples in intents.items() for _ in examples]
        texts += BACKGROUND_EXAMPLES
        labels += [BACKGROUND] * len(BACKGROUND_EXAMPLES)
        words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
        features = FeatureUnion([("words", words), ("chars", chars)])
        svm = LinearSVC(C=1.0).fit(features.fit_transform(texts), labels)
        return cls(features, svm)

    def scores(self, text: str) -> list[tuple[str, float]]:
        """The likeliest intents with their confidence (0-1), best first; the background
        class is left out, so its weight shows as low confidence in the others."""
        margins = np.atleast_1d(self.svm.decision_function(self.features.transform([text]))[0])
        if margins.size == 1:  # two classes (one intent and the background): one margin
            margins = np.array([-margins[0], margins[0]])
        weights = np.exp(SOFTMAX_SCALE * (margins - margins.max()))
        confidence = weights / weights.sum()
        best = np.argsort(confidence)[::-1][: TOP + 1]
        ranked = [(str(self.svm.classes_[i]), float(confidence[i])) for i in best]
        return [(name, score) for name, score in ranked if name != BACKGROUND][:TOP]


def cache_key(intents: Mapping[str, Sequence[str]]) -> str:
    """A name for the model of these examples, with everything else that shapes it: a model
    trained by other code or another scikit-learn never loads."""
    canonical = json.dumps(
        {
            "version": MODEL_VERSION,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "background": BACKGROUND_EXAMPLES,
            "scale": SOFTMAX_SCALE,
            "intents": {k: list(v) for k, v in sorted(intents.items())},
        },
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Loaded:
    classifier: TfidfClassifier
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
    classifier = TfidfClassifier.train(intents)
    if path is not None:
        _save(path, classifier)
    seconds = time.perf_counter() - started
    log.info("intents_trained", intents=len(intents), seconds=round(seconds, 2))
    return Loaded(classifier, trained=True, seconds=seconds)


def _load(path: Path) -> TfidfClassifier | None:
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
    return classifier if isinstance(classifier, TfidfClassifier) else None


def _save(path: Path, classifier: TfidfClassifier) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A file of its own per writer, renamed into place: processes training at once
        # never trip over each other, and a crash never leaves half a model.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as f:
            f.write(pickle.dumps(classifier))
        Path(f.name).replace(path)
    except OSError as exc:
        log.warning("intents_cache_not_written", path=str(path), error=str(exc))
