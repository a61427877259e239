"""The text stream and the stage line, without a model: UTF-8 pieces, stop strings, whitespace, ETA."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llava_edge.api import Captioner
from llava_edge.events import ENCODE, PREFILL, Progress, StageView, TextDelta, TextStream, format_seconds
from llava_edge.generation import contains_stop, cut_at_stop
from llava_edge.runtime.decoding import token_piece


def stream_pieces(pieces: list[bytes], stop: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """The deltas the decoder sends for these token pieces (it ends at the first stop string, as the
    decoder does), and the final text."""
    text, taken, deltas = TextStream(stop), [], []
    for piece in pieces:
        taken.append(piece)
        if stop and contains_stop(taken, stop):
            break
        deltas.append(text.feed(piece))
    final = cut_at_stop(b"".join(taken).decode("utf-8", "replace"), stop).strip()
    deltas.append(text.finish(final))
    return deltas, final


def test_multibyte_characters_split_across_real_tokens_are_sent_whole(captioner: Captioner) -> None:
    """The tiny model's tokenizer falls back to single bytes for these characters, as Mistral's does."""
    runtime = captioner.runtime
    sentence = "Un café ☕ au 日本 🙂, naïve — ü."
    pieces = [token_piece(runtime._vocab, token) for token in runtime.tokenize(sentence)]
    assert any(len(piece) == 1 and piece[0] >= 0x80 for piece in pieces), "no character was split into bytes"
    text = TextStream()
    deltas = [text.feed(piece) for piece in pieces]
    assert "\ufffd" not in "".join(deltas)
    assert all(delta.encode("utf-8").decode("utf-8") == delta for delta in deltas)
    assert "".join(deltas) + text.finish(sentence) == sentence
    assert sum(1 for delta in deltas if delta) > 10, "text must come as it is generated, not at the end"


def test_text_is_sent_as_soon_as_it_is_settled() -> None:
    text = TextStream(("STOP",))
    assert text.feed(b" Hello") == "Hello"  # the leading space never goes out: the final text is stripped
    assert text.feed(b" wor") == " wor"
    assert text.feed(b"ld ST") == "ld"  # " ST" may begin STOP
    assert text.feed(b"AY") == " STAY"
    assert text.feed(b"\xe2\x98") == ""  # half of a character
    assert text.feed(b"\x95 ") == "\u2615"  # the trailing space waits: it may end the answer
    assert text.finish("Hello world STAY\u2615") == ""


def test_a_stop_string_spread_over_tokens_is_never_sent() -> None:
    deltas, final = stream_pieces([b"The ca", b"t sat. EN", b"D and more"], stop=("END",))
    assert final == "The cat sat."
    assert "".join(deltas) == final and not any("EN" in delta for delta in deltas)


def test_whitespace_only_answers_and_empty_answers_join_to_the_final_text() -> None:
    for pieces in ([b"  ", b"\n"], [], [b"\n\nA", b"  "]):
        deltas, final = stream_pieces(pieces)
        assert "".join(deltas) == final


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from([" ", "\n", "a", "b ", "é", "☕", "🙂", "END", "EN", "D", "ST", "OP"]).map(str.encode),
            st.binary(min_size=1, max_size=3),
        ),
        max_size=30,
    ).map(lambda items: [bytes(piece) for piece in items]),
    stop=st.lists(st.sampled_from(["END", "STOP", "é ", "\ufffd", "b b", ""]), max_size=2).map(tuple),
)
def test_deltas_always_join_to_the_final_text(pieces: list[bytes], stop: tuple[str, ...]) -> None:
    """Any bytes, split anywhere (invalid UTF-8 included), with or without stop strings."""
    deltas, final = stream_pieces(pieces, stop)
    assert "".join(deltas) == final


def test_progress_estimates_the_rest_from_the_measured_rate() -> None:
    progress = Progress.measured(PREFILL, 512, 2048, 4.0)
    assert progress.eta_s == pytest.approx(12.0) and progress.fraction == 0.25
    assert Progress.measured(PREFILL, 0, 2048, 0.0).eta_s is None
    assert Progress.measured(ENCODE, 5, 5, 10.0).eta_s == 0.0


def test_the_stage_line_shows_tiles_prefill_and_eta_then_tokens() -> None:
    view = StageView()
    assert view.line() == "starting"
    view.update(Progress.measured(ENCODE, 2, 5, 4.0))
    view.update(Progress.measured(PREFILL, 1152, 2890, 9.0))
    # encode: 3 tiles left at 2 s each; prefill: 1738 tokens at 9/1152 s each
    assert view.eta_s == pytest.approx(6.0 + 9.0 / 1152 * 1738)
    assert view.line(bar_width=10) == "CLIP 2/5 tiles · prefill [####......] 1,152/2,890 tokens · ETA 0:20"
    view.update(TextDelta("Hi", 3))
    assert view.line() == "generating · 3 tokens"
    assert format_seconds(3725) == "1:02:05"
