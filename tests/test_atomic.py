"""write_atomically: the target is the old file or the whole new one, never half of one."""

from __future__ import annotations

import pytest

from nwb_subspace.io.atomic import write_atomically


def test_writes_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    assert write_atomically(target, lambda tmp: tmp.write_text("a,b\n1,2\n")) == target
    assert target.read_text() == "a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("new, but cut")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_suffix_names_the_temporary(tmp_path):
    seen = []
    write_atomically(tmp_path / "x.nwb", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"")),
                     suffix=".tmp.nwb")  # fmt: skip
    assert seen[0].startswith(".x.nwb.") and seen[0].endswith(".tmp.nwb")
