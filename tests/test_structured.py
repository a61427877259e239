"""Structured captions on the tiny synthetic model: its weights are random, so only the grammar can make the
answers JSON that follows the schema. Bounded schemas always parse and validate, greedy and sampled;
unbounded ones are valid or reported cut; hostile schemas are refused before any image is read."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.images import ImageFactory, encode_image

from llava_edge import Captioner, GenerationOptions, TextDelta
from llava_edge.api import CaptionDone, structured_output
from llava_edge.errors import MissingExtraError, SchemaError, StructuredOutputError
from llava_edge.structured import PHOTO_SCHEMA, SchemaLimits, StructuredOutput

GREEDY = GenerationOptions(max_tokens=700, temperature=0.0)
SAMPLED = [GenerationOptions(max_tokens=700, temperature=1.0, seed=seed) for seed in (1, 2)]
"""Every path of the bounded schemas below fits in 700 tokens (a character is at most one ``\\uXXXX`` escape)."""


def _string(low: int, high: int) -> dict[str, Any]:
    return {"type": "string", "minLength": low, "maxLength": high}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required if required is not None else
            list(properties), "additionalProperties": False}


BOUNDED: dict[str, dict[str, Any]] = {
    "flat object": _object({"name": _string(1, 8), "count": {"type": "integer"}, "ok": {"type": "boolean"}}),
    "optional keys": _object({"a": _string(0, 4), "b": {"type": "number"}, "c": {"type": "null"}}, required=["b"]),
    "enum and const": _object({"color": {"enum": ["red", "green", "blue"]}, "kind": {"const": "photo"},
                               "size": {"enum": [1, 2.5, None, True]}}),
    "array of strings": {"type": "array", "items": _string(1, 5), "minItems": 1, "maxItems": 3},
    "nested": _object({"subject": _object({"label": _string(1, 6), "tags": {"type": "array", "items": _string(1, 4),
                                                                                "maxItems": 2}}),
                       "scores": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}),
    "nullable union": _object({"maybe": {"anyOf": [_string(1, 3), {"type": "null"}]},
                               "either": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]}}),
    "tuple": {"type": "array", "prefixItems": [{"type": "integer"}, _string(2, 2), {"type": "boolean"}]},
    "formats": _object({"day": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"}}),
    "definitions": {"$defs": {"point": _object({"x": {"type": "integer"}, "y": {"type": "integer"}})},
                    **_object({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}})},
    "exact lengths": _object({"code": _string(3, 3), "pair": {"type": "array", "items": {"type": "boolean"},
                                                              "minItems": 2, "maxItems": 2}}),
}


@pytest.fixture(scope="module")
def picture() -> bytes:
    return encode_image(64, 48)


def _valid(result: Any, schema: dict[str, Any]) -> None:
    assert result.finish_reason == "stop", result.text
    assert result.data is not None and json.loads(result.text) == result.data
    jsonschema.validate(result.data, schema)


@pytest.mark.parametrize("name", list(BOUNDED))
def test_bounded_schemas_always_parse_and_validate_greedy_and_sampled(captioner: Captioner, picture: bytes,
                                                                      name: str) -> None:
    schema = BOUNDED[name]
    prepared = structured_output(schema)
    for options in [GREEDY, *SAMPLED]:
        _valid(captioner.describe(picture, "Describe.", options=options, schema=prepared), schema)


@st.composite
def _schemas(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """Bounded schemas within the supported subset; an object at the root (a whole answer of ``null`` would
    read as ``data=None``)."""
    leaves = st.one_of(
        st.builds(_string, st.integers(0, 2), st.integers(2, 5)),
        st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]),
        st.lists(st.one_of(st.text("abcxyz", max_size=4), st.integers(-9, 9), st.booleans()), min_size=1,
                 max_size=4, unique=True).map(lambda values: {"enum": values}),
    )
    if depth >= 2 or (depth > 0 and draw(st.booleans())):
        return draw(leaves)
    if depth > 0 and draw(st.booleans()):
        low = draw(st.integers(0, 2))
        return {"type": "array", "items": draw(_schemas(depth + 1)), "minItems": low,
                "maxItems": low + draw(st.integers(0, 2))}
    names = draw(st.lists(st.text("abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=3, unique=True))
    properties = {name: draw(_schemas(depth + 1)) for name in names}
    required = [name for name in names if draw(st.booleans())]
    return _object(properties, required)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas(), sampled=st.booleans(), seed=st.integers(0, 2**16))
def test_generated_bounded_schemas_parse_and_validate(captioner: Captioner, picture: bytes, schema: dict[str, Any],
                                                      sampled: bool, seed: int) -> None:
    options = GenerationOptions(max_tokens=900, temperature=1.0 if sampled else 0.0, seed=seed)
    _valid(captioner.describe(picture, "Describe.", options=options, schema=schema), schema)


@pytest.mark.parametrize("schema", [
    {"type": "object"},
    _object({"story": {"type": "string"}}),
    {"type": "array", "items": {"type": "integer"}},
    _object({"notes": {"type": "array", "items": {"type": "string"}}, "extra": {"type": "object"}}),
])
def test_unbounded_schemas_are_valid_or_reported_cut(captioner: Captioner, picture: bytes,
                                                      schema: dict[str, Any]) -> None:
    for options in [GenerationOptions(max_tokens=30, temperature=0.0),
                    *(GenerationOptions(max_tokens=30, temperature=1.0, seed=seed) for seed in range(3))]:
        result = captioner.describe(picture, "Describe.", options=options, schema=schema)
        if result.finish_reason == "length":
            assert result.data is None
        else:
            _valid(result, schema)


def test_the_photo_schema_fills_its_fields(captioner: Captioner, picture: bytes) -> None:
    result = captioner.describe(picture, options=GenerationOptions(max_tokens=3000, temperature=0.0),
                                schema="photo")
    _valid(result, PHOTO_SCHEMA)
    assert set(result.data) == {"caption", "alt_text", "keywords", "main_subjects"}


def test_whitespace_between_tokens_is_at_most_one_space(captioner: Captioner, picture: bytes) -> None:
    schema = _object({"a": {"type": "boolean"}, "b": {"enum": [1, 2]}})
    assert 'space ::= " "?' in structured_output(schema).grammar  # type: ignore[union-attr]
    for seed in range(4):
        options = GenerationOptions(max_tokens=60, temperature=1.5, seed=seed)
        text = captioner.describe(picture, "Describe.", options=options, schema=schema).text
        assert re.fullmatch(r'\{ ?"a" ?: ?(true|false) ?, ?"b" ?: ?[12] ?\}', text), text


def test_streamed_deltas_join_to_the_final_json(captioner: Captioner, picture: bytes) -> None:
    deltas, done = [], None
    for event in captioner.stream(picture, "Describe.", options=SAMPLED[0], schema=BOUNDED["nested"]):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        elif isinstance(event, CaptionDone):
            done = event
    assert done is not None and done.result.data is not None
    assert "".join(deltas) == done.result.text and len([delta for delta in deltas if delta]) > 3


def test_a_stop_string_inside_the_json_ends_it_unparsed(captioner: Captioner, picture: bytes) -> None:
    options = GenerationOptions(max_tokens=200, temperature=0.0, stop=('":',))
    result = captioner.describe(picture, "Describe.", options=options, schema="photo")
    assert result.finish_reason == "stop" and result.data is None
    assert result.text.replace(" ", "") == '{"caption'


def test_cancelled_structured_caption_leaves_the_model_ready(captioner: Captioner, picture: bytes) -> None:
    events = captioner.stream(picture, "Describe.", options=SAMPLED[1], schema="photo")
    with closing(events):
        deltas = 0
        for event in events:
            deltas += isinstance(event, TextDelta)
            if deltas == 3:
                break
    _valid(captioner.describe(picture, "Describe.", options=GREEDY, schema=BOUNDED["flat object"]),
           BOUNDED["flat object"])
    plain = captioner.describe(picture, "Describe.", options=GenerationOptions(max_tokens=8, seed=3))
    assert plain.data is None and plain.timings.generated_tokens > 0


def test_the_image_prefix_is_reused_under_a_grammar(captioner: Captioner, make_image: ImageFactory) -> None:
    image = make_image(80, 60)
    first = captioner.describe(image, "Describe.", options=GREEDY, schema=BOUNDED["enum and const"])
    second = captioner.describe(image, "Describe.", options=SAMPLED[0], schema=BOUNDED["flat object"])
    assert second.timings.prefix_cache_hit and second.timings.image_encode_s == 0
    _valid(first, BOUNDED["enum and const"])
    _valid(second, BOUNDED["flat object"])


def test_a_raw_grammar_constrains_without_parsing(captioner: Captioner, picture: bytes) -> None:
    for seed in range(3):
        options = GenerationOptions(max_tokens=20, temperature=1.0, seed=seed)
        result = captioner.describe(picture, "Yes or no?", options=options, grammar='root ::= "yes" | "no"')
        assert result.text in ("yes", "no") and result.data is None


def test_module_caption_returns_the_parsed_object_beside_the_runware_item(captioner: Captioner,
                                                                          picture: bytes) -> None:
    item = captioner.caption(picture, "Describe.", options=GREEDY, schema=BOUNDED["flat object"])
    assert item["taskType"] == "imageCaption" and json.loads(item["text"]) == item["data"]


# -- what is refused, before any image is read -----------------------------------------------------------------


def _chain(length: int) -> dict[str, Any]:
    defs = {f"d{index}": {"$ref": f"#/$defs/d{index + 1}"} for index in range(length)}
    defs[f"d{length}"] = {"type": "integer"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _ambiguous(levels: int, width: int = 256) -> dict[str, Any]:
    """``levels`` nested ``anyOf``s of ``width`` identical alternatives each: width ** levels parses."""
    defs = {f"l{level}": {"anyOf": [{"$ref": f"#/$defs/l{level + 1}"}] * width} for level in range(levels - 1)}
    defs[f"l{levels - 1}"] = {"anyOf": [{"type": "integer"}] * width}
    return {"$defs": defs, "$ref": "#/$defs/l0"}


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = _object({"x": schema})
    return schema


HOSTILE: dict[str, tuple[Callable[[], Any], str]] = {
    "maxItems 50000": (lambda: {"type": "array", "items": {"type": "integer"}, "maxItems": 50_000}, "maxItems"),
    "maxLength 100000": (lambda: _object({"s": {"type": "string", "maxLength": 100_000}}), "maxLength"),
    "$ref chain 200 deep": (lambda: _chain(200), "$ref"),
    "enum of 100k": (lambda: {"enum": list(range(100_000))}, "bytes"),
    "enum of 1000": (lambda: {"enum": list(range(1_000))}, "1,000 alternatives"),
    "anyOf 256 four levels deep": (lambda: _ambiguous(4), "along one path, over the limit of 256"),
    "1 MB schema": (lambda: _object({f"p{index}": {"type": "string", "description": "x" * 1000}
                                     for index in range(1000)}), "bytes"),
    "nesting 500 deep": (lambda: _nested(500), "nested"),
    "many counts": (lambda: _object({f"s{index}": _string(0, 900) for index in range(10)}), "add up"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_schemas_are_refused_fast_before_the_image_is_read(captioner: Captioner, name: str) -> None:
    build, reason = HOSTILE[name]
    schema = build()
    began = time.perf_counter()
    with pytest.raises(SchemaError, match=re.escape(reason)):
        captioner.describe("/nonexistent/never-read.png", schema=schema)
    assert time.perf_counter() - began < 10 * 1.0  # hang guard; refused in milliseconds before any grammar is built
    _valid(captioner.describe(encode_image(40, 40), "Describe.", options=GREEDY, schema=BOUNDED["flat object"]),
           BOUNDED["flat object"])


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "integer", "multipleOf": 3}, "multipleOf 3 is not a power of ten"),
    ({"type": "number", "multipleOf": 0.25}, "multipleOf 0.25 is not a power of ten"),
    ({"type": "integer", "multipleOf": 10, "minimum": 5}, "multipleOf 10 beside minimum/maximum"),
    ({"minimum": 0}, 'minimum need "type": "number"'),
    ({"type": "integer", "minimum": 5, "maximum": 2}, "no integer lies within its bounds"),
    ({"type": "object", "patternProperties": {"a": {}}}, "patternProperties"),
    ({"type": "string", "pattern": "(a+)*"}, "quantified group that holds a quantifier or an alternation"),
    ({"type": "string", "pattern": "^(a|b)+$"}, "quantified group that holds a quantifier or an alternation"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference"),
    ({"type": "string", "pattern": "^(?=a)a$"}, "lookaround"),
    ({"type": "string", "pattern": "^(?<!a)b$"}, "lookaround"),
    ({"type": "string", "pattern": "a[b"}, "not a valid JSON Schema"),
    ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "no format or pattern"),
    ({"type": "array", "prefixItems": [{"type": "integer"}], "uniqueItems": True}, "uniqueItems need"),
    ({"enum": ["a", "bb"], "maxLength": 1, "type": "string"}, 'the value "bb" breaks'),
    ({"type": ["string", "null"], "maxLength": 3}, "anyOf"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]}, "requires b"),
    ({"$ref": "https://example.com/schema.json"}, "remote"),
    ({"allOf": [{"type": "object"}]}, "allOf"),
    ({"type": "array", "minItems": 2}, "items"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength is more than maxLength"),
    ({"type": "integer", "maximum": "big"}, "not a valid JSON Schema"),
    ({"properties": {"a": True}}, "not a schema object"),
])
def test_unsupported_keywords_and_shapes_are_named(schema: dict[str, Any], named: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(named)) as caught:
        structured_output(schema)
    assert caught.value.code == "invalidSchema" and caught.value.parameter == "schema"


def test_pydantic_schemas_are_accepted() -> None:
    from pydantic import BaseModel, Field

    class Subject(BaseModel):
        label: str = Field(max_length=20, description="What it is.")

    class Photo(BaseModel):
        caption: str = Field(max_length=80)
        subjects: list[Subject] = Field(max_length=3)
        mood: str | None = None

    prepared = structured_output(Photo.model_json_schema())
    assert prepared is not None and prepared.schema == Photo.model_json_schema()


def test_limits_are_adjustable_and_a_grammar_over_its_cap_is_refused() -> None:
    schema = _object({"s": _string(0, 300)})
    with pytest.raises(SchemaError, match="grammar is"):
        structured_output(schema, limits=SchemaLimits(max_grammar_bytes=2_000))
    with pytest.raises(SchemaError, match="over the limit of 100"):
        structured_output(schema, limits=SchemaLimits(max_count=100))


def test_bad_grammars_and_names_are_refused() -> None:
    with pytest.raises(SchemaError, match="does not parse"):
        structured_output(grammar='root ::= "a" (')
    with pytest.raises(SchemaError, match="not both"):
        structured_output({"type": "object"}, grammar='root ::= "a"')
    with pytest.raises(SchemaError, match="photo, json"):
        structured_output("poem")


def test_a_complete_answer_that_breaks_the_schema_is_an_error_never_a_result() -> None:
    prepared = StructuredOutput('root ::= "x"', _object({"a": {"type": "string"}}), "schema")
    with pytest.raises(StructuredOutputError, match="does not follow"):
        prepared.parse('{"a": 1}', "stop")
    assert prepared.parse('{"a": "ok"}', "length") is None
    assert prepared.parse('{"a": "o', "stop") is None  # cut by a stop string


def test_without_jsonschema_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(MissingExtraError, match=re.escape('pip install "llava-edge[structured]"')):
        structured_output({"type": "object"})
