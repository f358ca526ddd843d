"""Intent classification on CLINC150's validation split.

Trains the default classifier on the Full (100 examples per intent) and Small (50) training
sets, and prints in-scope accuracy, out-of-scope recall at the default threshold, training
time and the median time per message, next to the published figures of other systems.

    .venv/bin/python bench/intents.py [PATH/TO/clinc150]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.cli import read_intents
from bot.config import Config
from bot.evaluation import evaluate, read_labelled

PUBLISHED = [  # in-scope accuracy / out-of-scope recall, Full, from the benchmark's paper
    ("Rasa NLU", 90.9, 31.2),
    ("DialogFlow", 90.8, 26.7),
    ("MLP on USE embeddings", 93.4, 49.1),
    ("BERT fine-tuned", 96.2, 52.3),
]


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared/datasets/clinc150"
    data = read_labelled(folder / "val.jsonl")
    threshold = Config.model_fields["intent_threshold"].default
    print(f"{'system':<34}{'in-scope %':>11}{'OOS recall %':>14}{'train s':>9}{'ms/msg':>8}")
    for name, file in (
        ("groupbot (Full)", "intents-full.yaml"),
        ("groupbot (Small)", "intents-small.yaml"),
    ):
        report = evaluate(read_intents(folder / file), data, threshold=threshold)
        print(
            f"{name:<34}{report.in_scope_accuracy:>11.2f}{report.oos_recall:>14.2f}"
            f"{report.train_seconds:>9.2f}{report.latency_ms_median:>8.3f}"
        )
    for name, accuracy, recall in PUBLISHED:
        print(f"{name + ' (published)':<34}{accuracy:>11.1f}{recall:>14.1f}{'-':>9}{'-':>8}")


if __name__ == "__main__":
    main()
