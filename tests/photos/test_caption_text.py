"""Caption text: stock openers, trigger words, alt text, and what if_exists makes of an existing caption."""

from __future__ import annotations

import pytest

from llava_edge.photos.caption_text import (
    alt_text_from,
    check_if_exists,
    compose,
    is_placeholder,
    parse_keywords,
    strip_preamble,
    unwrap,
    wrap,
)


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("The image shows a dog on a beach.", "A dog on a beach."),
        ("This image depicts two children playing chess.", "Two children playing chess."),
        ("The photo features: a red barn at dusk.", "A red barn at dusk."),
        ("In this image, a man rides a bicycle.", "A man rides a bicycle."),
        ("In this picture we can see a cat.", "A cat."),
        ("This is a photo of a lighthouse.", "A lighthouse."),
        ("The image appears to show a foggy harbour.", "A foggy harbour."),
        ("This black-and-white photograph captures an old street.", "An old street."),
        ("A dog on a beach.", "A dog on a beach."),
        ("The imagery of the poem is vivid.", "The imagery of the poem is vivid."),
        ("The image shows", "The image shows"),
        ("  The picture shows 3 boats.  ", "3 boats."),
    ],
)
def test_strip_preamble_drops_stock_openers_only(caption: str, expected: str) -> None:
    assert strip_preamble(caption) == expected


def test_alt_text_keeps_whole_sentences_within_250_characters() -> None:
    short = "A kite. Over a field."
    assert alt_text_from(short) == short
    first, second = "A" * 120 + ".", "B" * 140 + "."
    assert alt_text_from(f"{first} {second} More.") == first
    long_sentence = " ".join(["word"] * 80) + "."
    cut = alt_text_from(long_sentence)
    assert len(cut) <= 250 and cut.endswith("…") and " wor…" not in cut


def test_trigger_words_join_with_one_space_unless_given() -> None:
    assert wrap("A dog.", "ohwx") == "ohwx A dog."
    assert wrap("A dog.", "ohwx, ") == "ohwx, A dog."
    assert wrap("A dog.", "", ", style of x") == "A dog. , style of x"
    assert wrap("a dog", "", " style") == "a dog style"
    assert unwrap("ohwx, A dog. style", "ohwx, ", "style") == "A dog."


def test_placeholders_from_cameras_are_no_description() -> None:
    assert is_placeholder(None) and is_placeholder("   ") and is_placeholder("OLYMPUS DIGITAL CAMERA       ")
    assert is_placeholder("SONY DSC\x00\x00") and not is_placeholder("A sunset over the bay.")


def test_compose_follows_if_exists() -> None:
    assert compose(None, "New.", "skip") == ("New.", "written")
    assert compose("  ", "New.", "skip") == ("New.", "written")
    assert compose("Old.", "New.", "skip") == (None, "skipped")
    assert compose("Old.", "New.", "overwrite") == ("New.", "overwritten")
    assert compose("New.", "New.", "overwrite") == (None, "unchanged")
    assert compose("Old.", "New.", "append") == ("Old. New.", "appended")
    assert compose("Old. New.", "New.", "append") == (None, "unchanged")
    assert compose("ohwx Old.", "New.", "append", prefix="ohwx") == ("ohwx Old. New.", "appended")


def test_if_exists_values_are_checked() -> None:
    assert check_if_exists("append") == "append"
    with pytest.raises(ValueError, match="skip, overwrite, append"):
        check_if_exists("replace")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("kite, field, sky, Kite", ["kite", "field", "sky"]),
        ("Keywords: red kite; green field.", ["red kite", "green field"]),
        ("1. kite\n2. field\n- clouds\n* \"summer\"", ["kite", "field", "clouds", "summer"]),
        ("Here are some keywords: dog, beach", ["dog", "beach"]),
        ("", []),
    ],
)
def test_keywords_are_parsed_from_the_models_answer(answer: str, expected: list[str]) -> None:
    assert parse_keywords(answer) == expected
