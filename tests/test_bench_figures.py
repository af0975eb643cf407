"""bench.outside's figures over repeated runs: every number the median of its runs."""
from bench.outside import median_of


def _run(p50, p99, underrun_max, cpu, errors=()):
    return {"target": "ours", "calls": 50, "greeted": 50,
            "greeting_added_ms": {"p50": p50, "p99": p99, "n": 50},
            "underruns": {"count": 0 if underrun_max is None else 3, "max_ms": underrun_max},
            "cpu_s_per_call_minute": cpu, "greeting_parts": [{"call": 0}], "errors": list(errors)}


def test_each_figure_is_the_median_of_its_runs_and_every_error_is_kept():
    merged = median_of([_run(10, 90, None, 0.5), _run(40, 300, 12.0, 0.7, ["a call was not greeted"]),
                        _run(20, 120, 30.0, 0.6)])
    assert merged["runs"] == 3 and merged["target"] == "ours" and merged["greeted"] == 50
    assert merged["greeting_added_ms"] == {"p50": 20, "p99": 120, "n": 50}
    assert merged["cpu_s_per_call_minute"] == 0.6
    # The runs without underruns have no longest one: the median is of those that had one.
    assert merged["underruns"] == {"count": 3, "max_ms": 21.0}
    assert merged["errors"] == ["run 2: a call was not greeted"]
