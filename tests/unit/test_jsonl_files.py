"""JSONL result files: a torn last line is a crash mid-write and is skipped (and cut off by the
next append, so a resumed sweep's points never merge into it); a malformed line before the
last is damage and is named."""

import pytest

from servesweep.errors import ReportError
from servesweep.results import append_jsonl, read_jsonl


def test_a_torn_last_line_is_skipped_and_cut_off_by_the_next_append(tmp_path):
    path = tmp_path / "points.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"b": 2, "torn')  # the process died here
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, {"c": 3})  # the resumed run
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'


def test_a_file_that_is_only_a_torn_line_starts_over(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_bytes(b'{"torn')
    append_jsonl(path, {"d": 4})
    assert read_jsonl(path) == [{"d": 4}]


def test_a_malformed_line_in_the_middle_is_named(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n{"c": 3}\n')
    with pytest.raises(ReportError, match=r"points.jsonl:2: not valid JSON"):
        read_jsonl(path)
