"""A SentencePiece-style (``tokenizer.ggml.model = "llama"``) vocabulary for synthetic models.

Mistral's layout: ``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback tokens ``<0x00>``..``<0xFF>``,
then ordinary pieces scored ``-rank``. llama.cpp's SPM tokenizer starts from single characters and
merges an adjacent pair only when the concatenation is itself a piece, so every word here comes with
its whole prefix chain (``▁i``, ``▁im``, ``▁ima``, ``▁imag``, ``▁image``). A word from the built-in
corpus then always ends up as one token, and English prompts tokenize into multi-character pieces
as they would with a real model. Anything else falls back to characters and bytes.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product

SPACE = "\u2581"
"""SentencePiece's visible space, ``▁``."""

TYPE_NORMAL = 1
TYPE_UNKNOWN = 2
TYPE_CONTROL = 3
TYPE_BYTE = 6

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

_CORPUS = """
[INST] [/INST] Describe this image in 3-5 vivid sentences. What is in the picture? What do you see?
Write a short caption for the photo. Please describe the image in detail.
The image shows a person, a dog and a cat sitting on a wooden table near the window. There are
trees, flowers, buildings, cars and people on the street under a blue sky with white clouds. The
scene is bright and colorful, with light from the sun. A man and a woman are standing next to a red
car in front of an old house. It looks like a quiet morning in the city, and the water is calm.
In the background, mountains rise above green fields; in the foreground, children play.
This photograph captures a moment of everyday life. Text, sign, left, right, small, large, black,
yellow, dark, warm, food, plate, room, wall, road, river, beach, grass, animal, bird, shirt, hat,
face, hand, holding, wearing, looking, walking, smiling, appears, which, their, his, her, they, that.
"""

_WORD = re.compile(r"\[/?INST\]|[A-Za-z]+")


@dataclass(frozen=True)
class Vocab:
    """Parallel token, score and token-type lists, as GGUF stores them."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.tokens)


def build_vocab(size: int) -> Vocab:
    """The vocabulary, padded with further letter n-gram pieces to exactly ``size`` tokens.

    Raises:
        ValueError: ``size`` is smaller than the base vocabulary (specials, bytes, corpus pieces).
    """
    specials = [("<unk>", TYPE_UNKNOWN), ("<s>", TYPE_CONTROL), ("</s>", TYPE_CONTROL)]
    bytes_ = [(f"<0x{value:02X}>", TYPE_BYTE) for value in range(256)]
    fixed = specials + bytes_
    pieces = _unique(_base_pieces())
    room = size - len(fixed)
    if room < len(pieces):
        raise ValueError(f"A vocabulary needs at least {len(fixed) + len(pieces)} tokens, got {size}.")
    taken = set(pieces)
    pieces += [piece for piece in _padding_pieces() if piece not in taken][: room - len(pieces)]
    if len(pieces) < room:
        raise ValueError(f"Cannot pad a vocabulary to {size} tokens; at most {len(fixed) + len(pieces)}.")
    tokens = [text for text, _ in fixed] + pieces
    types = [kind for _, kind in fixed] + [TYPE_NORMAL] * len(pieces)
    scores = [0.0] * len(fixed) + [-float(rank) for rank in range(len(pieces))]
    return Vocab(tuple(tokens), tuple(scores), tuple(types))


def base_vocab_size() -> int:
    """How many tokens the vocabulary has before padding."""
    return 3 + 256 + len(_unique(_base_pieces()))


def _base_pieces() -> Iterator[str]:
    """``▁``, every printable character bare and after ``▁``, then the corpus words' prefix chains."""
    yield SPACE
    chars = [char for char in string.printable if char.isprintable() and char != " "]
    yield from chars
    yield from (SPACE + char for char in chars)
    for word in _WORD.findall(_CORPUS):
        for form in _unique([word, word.lower()]):
            yield from _prefixes(SPACE + form)
            if form[0].isupper():
                yield from _prefixes(form)  # a capitalized word may start a line: no ▁ before it


def _padding_pieces() -> Iterator[str]:
    """Letter bigrams then trigrams, bare and after ``▁``: filler up to a real vocabulary size."""
    for length in (2, 3):
        for letters in product(string.ascii_lowercase, repeat=length):
            gram = "".join(letters)
            yield SPACE + gram
            yield gram


def _prefixes(piece: str) -> Iterator[str]:
    return (piece[:end] for end in range(2, len(piece) + 1))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
