"""A real SentencePiece ``Precompiled`` charsmap (the ``nmt_nfkc`` rules T5, ALBERT and XLNet ship), made here by
training a tiny SentencePiece model: nothing is downloaded."""

from __future__ import annotations

import functools
import io
import random


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index


def _field(message: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a serialized protobuf message."""
    index = 0
    while index < len(message):
        key, index = _varint(message, index)
        kind = key & 7
        if kind == 0:
            _, index = _varint(message, index)
        elif kind in (1, 5):
            index += 8 if kind == 1 else 4
        elif kind == 2:
            size, index = _varint(message, index)
            if key >> 3 == number:
                return message[index : index + size]
            index += size
        else:
            raise ValueError(f"unexpected wire type {kind}")
    raise KeyError(number)


@functools.lru_cache(maxsize=1)
def nmt_nfkc_charsmap() -> bytes:
    """The ``precompiled_charsmap`` of a SentencePiece model trained with the ``nmt_nfkc`` normalization rules."""
    import sentencepiece

    rng = random.Random(3)
    words = ["".join(rng.choices("etaoinshrdlu", k=rng.randint(1, 8))) for _ in range(2_000)]
    sentences = [" ".join(rng.choices(words, k=20)) for _ in range(1_000)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=500,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    # ModelProto.normalizer_spec (3) -> NormalizerSpec.precompiled_charsmap (2)
    return _field(_field(model.getvalue(), 3), 2)
