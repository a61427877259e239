"""JSON Schemas as real apps write them, on the tiny synthetic model (random weights: only the grammar makes the
answers valid): PhotoPrism's labels schema, Home Assistant AI Task selectors, pydantic ``Field`` bounds; number
bounds, ``multipleOf``, patterns, annotation formats and ``uniqueItems`` under hypothesis; the ambiguity bound,
sampling deadlines, control tokens and deep answers. Every answer validates with ``jsonschema`` or is reported
incomplete (``data`` None, ``finish_reason`` ``length``)."""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from support.app_schemas import HOME_ASSISTANT_TASK, PHOTOPRISM_LABELS
from support.images import encode_image

from llava_edge import Captioner, GenerationOptions, TextDelta
from llava_edge.api import CaptionDone, structured_output
from llava_edge.errors import GenerationTimeoutError, SchemaError
from llava_edge.structured import StructuredOutput
from llava_edge.structured.validation import validator_for

PICTURE = encode_image(48, 40)
OPTIONS = [GenerationOptions(max_tokens=400, temperature=0.0),
           *(GenerationOptions(max_tokens=400, temperature=1.0, seed=seed) for seed in (1, 2))]



class Label(BaseModel):
    name: str = Field(min_length=1, max_length=12)
    score: float = Field(ge=0, le=1)
    votes: int = Field(ge=1, lt=100, description="How many", examples=[3])


class Photo(BaseModel):
    title: str = Field(max_length=20, title="Title", default="untitled")
    labels: list[Label] = Field(max_length=2)
    tags: Annotated[list[Annotated[str, Field(pattern=r"^[a-z]{1,6}$")]], Field(max_length=3)]
    rating: int = Field(ge=-5, le=5, multiple_of=1)
    price: float = Field(gt=0, lt=1000, multiple_of=0.01)


def _checked(result: Any, schema: dict[str, Any]) -> None:
    """An answer is valid JSON that follows the schema, or reported incomplete."""
    if result.finish_reason == "length":
        assert result.data is None
        return
    assert result.finish_reason == "stop" and result.data is not None, result.text
    assert json.loads(result.text) == result.data
    jsonschema.validators.validator_for(schema).check_schema(schema)
    # jsonschema itself, with multipleOf compared in decimal: its float division calls 8.52 no multiple of 0.01
    # (8.52 / 0.01 is 851.999...), which pydantic and JSON's decimal text both accept
    validator_for(schema).validate(result.data)


@pytest.mark.parametrize("schema", [PHOTOPRISM_LABELS, HOME_ASSISTANT_TASK, Photo.model_json_schema()],
                         ids=["photoprism labels", "home assistant ai task", "pydantic fields"])
def test_app_schemas_answer_valid_or_incomplete(captioner: Captioner, schema: dict[str, Any]) -> None:
    prepared = structured_output(schema)
    for options in OPTIONS:
        result = captioner.describe(PICTURE, "Describe.", options=options, schema=prepared)
        _checked(result, schema)
        if result.data is not None and schema == Photo.model_json_schema():
            Photo.model_validate_json(result.text)  # the app's own parser accepts it


def test_bounded_numbers_are_decimal_text_within_the_bounds(captioner: Captioner) -> None:
    schema = {"type": "object", "properties": {
        "share": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        "count": {"type": "integer", "minimum": -120, "maximum": 7},
        "cents": {"type": "number", "minimum": 1, "maximum": 2, "multipleOf": 0.01},
        "hundreds": {"type": "integer", "multipleOf": 100}}, "required": ["share", "count", "cents", "hundreds"],
        "additionalProperties": False}
    for seed in range(4):
        options = GenerationOptions(max_tokens=200, temperature=1.5, seed=seed)
        result = captioner.describe(PICTURE, "Numbers.", options=options, schema=schema)
        _checked(result, schema)
        if result.data is not None:
            numbers = re.findall(r":\s?([^,}\s]+)", result.text)
            assert all(re.fullmatch(r"-?\d+(\.\d{1,6})?", number) for number in numbers), result.text
            assert re.search(r'"cents" ?: ?\d(\.\d{1,2})?[ ,}]', result.text), result.text


# -- hypothesis: schemas with the new keywords -----------------------------------------------------------------

_PATTERNS = [r"^[a-z]{1,4}$", r"^\d{2}-\d{2}$", r"^(?:yes|no)$", r"ab?c", r"^[A-F0-9]{3}$", r"^x(ab)*y$",
             r"^\w{1,3}\.\w{1,3}$", r"^[^0-9]{2}$", r'^"q"$', r"^é\s?$"]


@st.composite
def _bounded_number(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["integer", "number"]))
    schema: dict[str, Any] = {"type": kind}
    decimals = st.floats(-50, 50, allow_nan=False).map(lambda value: round(value, 3))
    low = draw(st.one_of(st.none(), st.integers(-50, 50), decimals))
    high = None if low is None else low + draw(st.sampled_from([2.5, 10, 333]))  # an integer always fits
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if high is not None and draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([0.1, 0.01, 1] if low is not None else [0.1, 1, 10, 1000]))
    return schema


_LEAVES = st.one_of(
    _bounded_number(),
    st.sampled_from(_PATTERNS).map(lambda pattern: {"type": "string", "pattern": pattern}),
    st.sampled_from(["entity_id", "email", "uri", "date", "uuid"]).map(lambda name: {"type": "string", "format": name}),
)


@st.composite
def _schemas(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True))
    properties: dict[str, Any] = {}
    for name in names:
        leaf = draw(_LEAVES)
        if draw(st.booleans()):
            low = draw(st.integers(0, 2))
            leaf = {"type": "array", "items": leaf, "minItems": low, "maxItems": low + draw(st.integers(0, 3)),
                    "uniqueItems": draw(st.booleans())}
        properties[name] = leaf
    return {"type": "object", "properties": properties, "required": names, "additionalProperties": False}


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas(), sampled=st.booleans(), seed=st.integers(0, 2**16))
def test_generated_schemas_with_bounds_patterns_and_unique_items(captioner: Captioner, schema: dict[str, Any],
                                                                  sampled: bool, seed: int) -> None:
    options = GenerationOptions(max_tokens=500, temperature=1.2 if sampled else 0.0, seed=seed)
    result = captioner.describe(PICTURE, "Describe.", options=options, schema=schema)
    _checked(result, schema)


# -- uniqueItems ------------------------------------------------------------------------------------------------

UNIQUE: dict[str, Any] = {"type": "object", "properties": {"tags": {
    "type": "array", "items": {"enum": ["a", "b", 1, 1.0, True]}, "uniqueItems": True, "minItems": 2}},
    "required": ["tags"]}


def test_later_duplicates_are_removed_from_text_and_data() -> None:
    prepared = structured_output(UNIQUE)
    assert prepared is not None and prepared.deduplicates
    answer = prepared.finish('{"tags": ["a", 1, "a", true, 1.0, "b"]}', "stop")
    assert answer.data == {"tags": ["a", 1, True, "b"]} and json.loads(answer.text) == answer.data
    assert answer.finish_reason == "stop"
    short = prepared.finish('{"tags": ["b", "b", "b"]}', "stop")
    assert short.data is None and short.finish_reason == "length" and json.loads(short.text) == {"tags": ["b"]}
    kept = prepared.finish('{"tags": ["a", "b"]}', "stop")
    assert kept.text == '{"tags": ["a", "b"]}'


def test_a_stream_with_unique_items_holds_its_text_until_complete(captioner: Captioner) -> None:
    for seed in range(3):
        options = GenerationOptions(max_tokens=200, temperature=1.0, seed=seed)
        deltas, done = [], None
        for event in captioner.stream(PICTURE, "Tags.", options=options, schema=UNIQUE):
            if isinstance(event, TextDelta):
                deltas.append(event)
            elif isinstance(event, CaptionDone):
                done = event
        assert done is not None
        texts = [delta.text for delta in deltas if delta.text]
        assert "".join(texts) == done.result.text and len(texts) <= 1
        assert len(deltas) > 1  # the held-back tokens still report progress
        _checked(done.result, UNIQUE)


# -- bounds on what an answer may cost --------------------------------------------------------------------------


def _ambiguous(levels: int, width: int = 256) -> dict[str, Any]:
    defs = {f"level{level}": {"anyOf": [{"$ref": f"#/$defs/level{level + 1}"}] * width} for level in range(levels - 1)}
    defs[f"level{levels - 1}"] = {"anyOf": [{"type": "integer"}] * width}
    return {"$defs": defs, "$ref": "#/$defs/level0"}


@pytest.mark.parametrize(("schema", "path"), [
    (_ambiguous(4), "#/$defs/level2 has 256 alternatives times 256"),
    ({"type": "array", "items": {"anyOf": [{"enum": list(range(20))}, {"type": ["string", "null"]}] * 10}},
     "#/items has 20 alternatives times 20"),
    ({"type": "string", "pattern": "^(" + "|".join(f"{letter}({'|'.join('0123456789abcdef')})"
                                                   for letter in "ghijklmnopqrstuvw") + ")$"},
     "# has 272 alternatives"),
    ({"type": "object", "properties": {"a": {"enum": list(range(200))}, "b": {"anyOf": [
        {"enum": list(range(17))}] * 16}}}, "#/properties/b"),
])
def test_the_ambiguity_bound_is_refused_fast_and_named(schema: dict[str, Any], path: str) -> None:
    began = time.perf_counter()
    with pytest.raises(SchemaError, match=re.escape(path)) as caught:
        structured_output(schema)
    assert time.perf_counter() - began < 1.0  # hang guard: it is milliseconds
    assert "over the limit of 256 alternatives" in str(caught.value)


def test_siblings_do_not_multiply() -> None:
    schema = {"type": "object", "properties": {name: {"enum": list(range(200))} for name in "abcd"}}
    assert structured_output(schema) is not None


def test_sampling_deadlines_end_the_answer_with_a_typed_error(captioner: Captioner) -> None:
    for options in (GenerationOptions(max_tokens=20, token_deadline_s=1e-9),
                    GenerationOptions(max_tokens=20, deadline_s=1e-9)):
        with pytest.raises(GenerationTimeoutError, match="deadline_s") as caught:
            captioner.describe(PICTURE, "Describe.", options=options, schema=UNIQUE)
        assert isinstance(caught.value, TimeoutError) and caught.value.code == "timeout"
    _checked(captioner.describe(PICTURE, "Tags.", options=OPTIONS[0], schema=UNIQUE), UNIQUE)


def test_control_tokens_are_ruled_out_under_a_grammar(captioner: Captioner) -> None:
    import llama_cpp

    from llava_edge.runtime.sampling import ruled_out_tokens, token_piece

    vocab = captioner.runtime._vocab
    count = int(llama_cpp.llama_vocab_n_tokens(vocab))
    ruled_out, _ = ruled_out_tokens(vocab, count)
    controls = [token for token in range(count)
                if token_piece(vocab, token) != token_piece(vocab, token, special=True)
                and not llama_cpp.llama_vocab_is_eog(vocab, token)]
    assert controls and set(controls) <= set(ruled_out.tolist())
    strings = {"type": "object", "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 6}},
               "required": ["s"], "additionalProperties": False}
    for seed in range(6):
        options = GenerationOptions(max_tokens=80, temperature=2.0, seed=seed)
        _checked(captioner.describe(PICTURE, "Text.", options=options, schema=strings), strings)


RECURSIVE: dict[str, Any] = {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                             "$ref": "#/$defs/node"}


def test_answers_nest_no_deeper_than_the_limit(captioner: Captioner) -> None:
    prepared = structured_output(RECURSIVE)
    assert prepared is not None and prepared.max_depth == 32
    deep = "[" * 500 + "]" * 500
    assert prepared.finish(deep, "stop").data is None  # never a RecursionError
    for seed in range(3):
        options = GenerationOptions(max_tokens=300, temperature=1.0, seed=seed)
        result = captioner.describe(PICTURE, "Nest.", options=options, schema=prepared)
        _checked(result, RECURSIVE)
        depth = max((result.text[:index].count("[") - result.text[:index].count("]")
                     for index in range(len(result.text) + 1)), default=0)
        assert depth <= 32


def test_a_raw_structured_output_keeps_its_text() -> None:
    prepared = StructuredOutput('root ::= "x"', None, "grammar")
    assert prepared.finish("x", "stop").text == "x" and prepared.finish("x", "stop").data is None
