"""From a budget point to its samples (core.report.points), on hand-written budget rows."""

from __future__ import annotations

import pytest

from core.report.points import at_budget, point_table, problem_grid, split_forced


def row(pid: str, sample: int, budget: int, correct: bool, predicted=None, start=None, text="try 1\nanswer 3"):
    return {"problem_id": pid, "sample": sample, "budget": budget, "truncated": start is not None,
            "tokens_used": 9, "correct": correct, "predicted": predicted, "status": "ok", "response": text,
            "answer_start": start}


def test_split_forced_cuts_where_the_forced_answer_starts() -> None:
    assert split_forced(row("a", 0, 8, True, start=6)) == ("try 1\n", "answer 3")
    assert split_forced(row("a", 0, 8, True)) == ("try 1\nanswer 3", "")
    assert split_forced({**row("a", 0, 8, True), "answer_start": 99}) == ("try 1\nanswer 3", "")  # out of range


def test_point_table_filters_flips_against_another_budget() -> None:
    small = at_budget([row("a", 0, 8, False, "1"), row("b", 0, 8, True, "2"), row("c", 0, 8, False)], 8)
    large = at_budget([row("a", 0, 16, True, "3"), row("b", 0, 16, False, "4"), row("c", 0, 16, False),
                       row("d", 0, 16, True, "5")], 16)
    assert list(point_table(large, small, "wrong -> right").problem_id) == ["a"]
    assert list(point_table(large, small, "right -> wrong").problem_id) == ["b"]
    assert list(point_table(large, small, "right").problem_id) == ["a", "d"]
    table = point_table(large, small)
    assert len(table) == 4 and table.set_index("problem_id").loc["d", "before"] is None
    with pytest.raises(ValueError, match="only must be one of"):
        point_table(large, small, "flipped")


def test_problem_grid_shows_one_sample_across_budgets_and_checkpoints() -> None:
    grid = problem_grid({"step_0": [row("a", 0, 8, False, "1"), row("a", 0, 16, False), row("a", 1, 8, True, "3")],
                         "step_60": [row("a", 0, 16, True, "3")]}, ("a", 0))
    assert list(grid.index) == [8, 16] and list(grid.columns) == ["step_0", "step_60"]
    assert grid.loc[8, "step_0"] == "✗ 1" and grid.loc[16, "step_0"] == "✗ (none)"
    assert grid.loc[16, "step_60"] == "✓ 3" and grid.loc[8, "step_60"] == ""
