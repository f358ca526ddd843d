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
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    canonical = json.dumps(
        {"version": MODEL_VERSION, "intents": {k: list(v) for k, v in sorted(intents.items())}},
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
    trained (and cached)."""
    started = time.perf_counter()
    path = cache_dir / f"intents-{cache_key(intents)}.pickle" if cache_dir else None
    if path is not None and path.exists():
        try:
            # Only files this process family wrote, named by the hash of their examples.
            classifier = pickle.loads(path.read_bytes())  # noqa: S301
        except Exception:
            log.warning("intents_cache_unreadable", path=str(path))
        else:
            if isinstance(classifier, TfidfClassifier):
                return Loaded(classifier, trained=False, seconds=time.perf_counter() - started)
    classifier = TfidfClassifier.train(intents)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(classifier))
        partial.replace(path)  # atomic: a crash never leaves half a model under the real name
        for stale in path.parent.glob("intents-*.pickle"):  # models of examples since changed
            if stale != path:
                stale.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info("intents_trained", intents=len(intents), seconds=round(seconds, 2))
    return Loaded(classifier, trained=True, seconds=seconds)
