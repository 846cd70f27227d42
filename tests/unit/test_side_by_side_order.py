"""bench/gpu/side_by_side.py's run order: every tool in every position over as many rounds as tools."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("side_by_side", ROOT / "bench" / "gpu" / "side_by_side.py")
side_by_side = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(side_by_side)


def test_three_tools_take_every_position_once_in_three_rounds():
    tools = ("vllm bench", "servesweep", "servesweep final usage")
    orders = [side_by_side.run_order(tools, turn) for turn in range(3)]
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(tools)
    assert all(sorted(order) == sorted(tools) for order in orders)


def test_two_tools_alternate_as_before():
    tools = ("vllm bench", "servesweep")
    assert [side_by_side.run_order(tools, turn) for turn in range(4)] == [tools, tools[::-1], tools, tools[::-1]]
