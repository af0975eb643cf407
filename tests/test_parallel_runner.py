"""The parallel runner's counting: its closing line is what CI reads to know that tests ran."""
from tests.parallel import closing_line, counts


def test_counts_read_every_kind_of_pytest_summary():
    assert counts("460 passed, 2 skipped in 349.17s (0:05:49)") == {"passed": 460, "failed": 0, "skipped": 2}
    assert counts("3 failed, 10 passed, 1 error in 5.00s") == {"passed": 10, "failed": 4, "skipped": 0}
    assert counts("1 xfailed, 2 xpassed, 4 errors in 1s") == {"passed": 0, "failed": 6, "skipped": 1}
    assert counts("no summary") == {"passed": 0, "failed": 0, "skipped": 0}


def test_closing_line_is_the_plain_form():
    assert closing_line({"passed": 852, "failed": 0, "skipped": 2}) == "suite: 852 passed, 0 failed, 2 skipped"
