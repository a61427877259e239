"""``llava-edge caption --structured photo`` and ``--json-schema FILE`` as a user runs them, on the tiny synthetic
model: the parsed objects in the console, JSONL and CSV outputs, and in the photo metadata written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from support.images import ImageFactory
from support.photos import encode
from support.tools import PHOTOS_INSTALL, exiftool, require_module

from llava_edge.cli import main
from llava_edge.structured import PHOTO_SCHEMA

pytestmark = pytest.mark.slow

TINY = ("--model", "synthetic-tiny", "--seed", "3", "--temperature", "1", "--threads", "1")
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 6},
                                           "n": {"type": "integer"}},
          "required": ["label", "n"], "additionalProperties": False}


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_structured_photo_prints_the_parsed_object(tmp_path: Path, make_image: ImageFactory) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(make_image(50, 40))
    done = subprocess.run([sys.executable, "-m", "llava_edge", "caption", str(image), "--structured", "photo",
                           "--json", "--max-tokens", "3000", *TINY], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["finishReason"] == "stop" and json.loads(record["text"]) == record["data"]
    jsonschema.validate(record["data"], PHOTO_SCHEMA)


def test_json_schema_records_go_into_jsonl_and_csv(tmp_path: Path, make_image: ImageFactory,
                                                   schema_file: Path) -> None:
    for index in range(2):
        (tmp_path / f"img{index}.png").write_bytes(make_image(40 + index, 30))
    images = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    for out in (tmp_path / "out.jsonl", tmp_path / "out.csv"):
        done = CliRunner().invoke(main, ["caption", *images, "--json-schema", str(schema_file), "--out", str(out),
                                         "--max-tokens", "200", *TINY])
        assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        jsonschema.validate(record["data"], SCHEMA)
        assert json.loads(record["response"]["text"]) == record["data"]
    with open(tmp_path / "out.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [json.loads(row["data"]) for row in rows] == [json.loads(row["text"]) for row in rows]
    assert all(json.loads(row["data"])["label"] for row in rows)


def test_a_cut_answer_has_no_data(tmp_path: Path, make_image: ImageFactory) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(make_image(50, 40))
    out = tmp_path / "out.jsonl"
    done = CliRunner().invoke(main, ["caption", str(image), "--structured", "photo", "--out", str(out),
                                     "--max-tokens", "4", *TINY])
    assert done.exit_code == 0, done.output
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["finishReason"] == "length" and "data" not in record


def test_bad_schemas_fail_before_the_model_loads(tmp_path: Path, make_image: ImageFactory,
                                                 schema_file: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(make_image(50, 40))
    schema_file.write_text(json.dumps({"type": "integer", "multipleOf": 3}))
    refused = CliRunner().invoke(main, ["caption", str(image), "--json-schema", str(schema_file),
                                        "--model", "no-such-model"])
    assert refused.exit_code == 1 and "multipleOf" in refused.output and "[invalidSchema]" in refused.output
    schema_file.write_text("{not json")
    broken = CliRunner().invoke(main, ["caption", str(image), "--json-schema", str(schema_file)])
    assert broken.exit_code == 2 and "not a readable JSON file" in broken.output
    both = CliRunner().invoke(main, ["caption", str(image), "--json-schema", str(schema_file), "--structured",
                                     "photo"])
    assert both.exit_code == 2 and "not both" in both.output


def test_photo_metadata_takes_the_structured_fields(tmp_path: Path) -> None:
    require_module("exiv2", PHOTOS_INSTALL)
    kite = tmp_path / "kite.jpg"
    kite.write_bytes(encode("JPEG"))
    out = tmp_path / "out.jsonl"
    done = CliRunner().invoke(main, ["caption", str(kite), "--structured", "photo", "--write-metadata", "--out",
                                     str(out), "--max-tokens", "3000", *TINY])
    assert done.exit_code == 0, done.output
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    data = record["data"]
    [tags] = exiftool(kite)
    assert tags["XMP-dc:Description"] == tags["IPTC:Caption-Abstract"] == data["caption"].strip()
    assert tags["XMP-iptcCore:AltTextAccessibility"] == data["alt_text"].strip()
    keywords = tags["XMP-dc:Subject"]
    assert (keywords if isinstance(keywords, list) else [keywords]) == [str(word).strip() for word in
                                                                        data["keywords"]]


def test_a_csv_from_before_the_data_column_is_resumed_without_it(tmp_path: Path) -> None:
    from llava_edge.batch.record_files import CSV_COLUMNS, CsvWriter
    from llava_edge.batch.records import BatchRecord

    out = tmp_path / "old.csv"
    out.write_text(",".join(CSV_COLUMNS[:-1]) + "\n")
    record = BatchRecord("a.png", "aa", model="m", response={"taskUUID": "u", "text": '{"x":1}'},
                         finish_reason="stop", data={"x": 1})
    writer = CsvWriter(out)
    writer.write(record)
    writer.close()
    with open(out, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(CSV_COLUMNS[:-1]) and len(rows[1]) == len(CSV_COLUMNS) - 1
    again = CsvWriter(out)
    assert again.done("a.png", lambda: "aa")
    again.close()
