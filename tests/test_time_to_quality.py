"""Smoke test of benchmarks/time_to_quality.py: `--quick` runs every task end to end (no timing assertions)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_quality.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("time_to_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_table_and_summary(benchmark, capsys):
    tasks = benchmark.main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    assert [task.name for task in tasks] == ["digits", "vae", "gpt"]
    assert out.strip().splitlines()[-1].startswith("time-to-quality speed-up vs fastest peer: digits ")
    for task in tasks:
        assert task.runs[0].course and not any(run.course for run in task.runs[1:])
        for run in task.runs:
            assert run.name in out
            assert run.done == run.steps == 4 and len(run.curve) == 2  # two evaluations of a 4-step smoke run
            assert run.seconds > 0 and run.items > 0


def test_target_and_speed_up(benchmark):
    def run(name, curve, course=False):
        return benchmark.Run(name, None, None, iter(()), 1, lambda: 0.0, course=course, curve=curve)

    task = benchmark.Task("t", "accuracy", True, [run("course", [(1.0, 0.5), (2.0, 0.9)], course=True),
                                                  run("a", [(3.0, 0.7), (8.0, 0.85)]),
                                                  run("b", [(2.0, 0.86), (4.0, 0.8)])])
    assert benchmark.target_of(task) == 0.85  # the best *final* quality of any peer
    assert benchmark.time_to(task.runs[2], 0.85, True) == 2.0  # first evaluation that meets it
    assert benchmark.speed_up(task) == pytest.approx(2.0 / 2.0)
    lower = benchmark.Task("t", "loss", False, [run("course", [(1.0, 3.0)], course=True), run("a", [(5.0, 2.0)])])
    assert benchmark.speed_up(lower) is None  # the course never reaches the peer's 2.0
    assert "t n/a" in benchmark.summary([lower])


def test_eval_fractions(benchmark):
    fractions = benchmark.eval_fractions(36)
    assert len(fractions) == 36 and fractions[0] == pytest.approx(0.005) and fractions[-1] == 1.0
    ratios = [b / a for a, b in zip(fractions, fractions[1:], strict=False)]
    assert ratios == pytest.approx([200 ** (1 / 35)] * 35)  # evenly spaced in log-time, each step < 1.17x
