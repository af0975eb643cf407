"""The parallel runner's counting: its closing lines are what CI reads to know that tests ran."""
from tests.parallel import closing_lines, counts


def test_counts_read_every_kind_of_pytest_summary():
    assert counts("460 passed, 2 skipped in 349.17s (0:05:49)") == {"passed": 460, "failed": 0, "skipped": 2}
    assert counts("3 failed, 10 passed, 1 error in 5.00s") == {"passed": 10, "failed": 4, "skipped": 0}
    assert counts("1 xfailed, 2 xpassed, 4 errors in 1s") == {"passed": 0, "failed": 6, "skipped": 1}
    assert counts("no summary") == {"passed": 0, "failed": 0, "skipped": 0}


def test_closing_lines_are_the_plain_form_then_pytests_own():
    plain, pytest_like = closing_lines({"passed": 852, "failed": 0, "skipped": 2}, 281.234)
    assert plain == "852 passed, 0 failed, 2 skipped"
    assert pytest_like == "=" * 20 + " 852 passed, 2 skipped in 281.23s " + "=" * 20
    assert counts(pytest_like) == {"passed": 852, "failed": 0, "skipped": 2}


def test_closing_lines_put_failures_first_and_say_when_nothing_ran():
    assert closing_lines({"passed": 5, "failed": 2, "skipped": 0}, 1.0)[1] == "=" * 20 + " 2 failed, 5 passed in 1.00s " + "=" * 20
    assert closing_lines({"passed": 0, "failed": 0, "skipped": 0}, 0.5)[1] == "=" * 20 + " no tests ran in 0.50s " + "=" * 20
