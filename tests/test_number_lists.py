"""One rule for number lists on the command line (tree levels, beams, cosines, refs)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from geoguess.cli import app
from geoguess.errors import UsageError
from geoguess.number_lists import parse_number_list
from geoguess.tree import parse_levels


def test_numbers_split_on_the_separators_with_spaces_and_empty_parts_ignored() -> None:
    assert parse_number_list("8, 24,,", int, "--beams") == [8, 24]
    assert parse_number_list("0.45,0.3", float, "--cosines") == [0.45, 0.3]
    assert parse_number_list("1000x40", int, "levels", separators=",x") == [1000, 40]
    assert parse_number_list("", int, "--beams") == []
    with pytest.raises(
        UsageError, match=r"^--beams: expected numbers separated by ',', got '8;24'$"
    ):
        parse_number_list("8;24", int, "--beams")
    with pytest.raises(UsageError, match="separated by ',' or 'x'"):
        parse_number_list("20,1e", int, "tree levels", separators=",x")


def test_every_option_reads_lists_the_same_way() -> None:
    assert parse_levels("20, 100") == parse_levels("20x100") == (20, 100)
    with pytest.raises(UsageError, match=r"^tree levels: expected numbers"):
        parse_levels("20,abc")
    from geoguess.cli.llm_options import parse_refs

    assert parse_refs("0, 5,10") == ((0, 0), (5, 5), (10, 10))
    with pytest.raises(UsageError, match=r"^--llm-refs: expected numbers"):
        parse_refs("five")
    res = CliRunner().invoke(app, ["bench", "search", "--beams", "8,x"])
    assert res.exit_code == 2
    assert "--beams: expected numbers separated by ','" in res.output
