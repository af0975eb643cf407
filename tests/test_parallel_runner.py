"""The parallel runner's counting (its closing lines are what CI reads to know that tests ran)
and its dealing of files to shards by their measured time."""

from tests.parallel import closing_lines, counts, database_kind, file_durations, shards


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


def test_a_files_seconds_are_its_tests_seconds_summed_from_the_junit_reports(tmp_path):
    report = tmp_path / "shard-0.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_one" time="1.25"/>'
        '<testcase classname="tests.test_a" name="test_two" time="2.5"/>'
        '<testcase classname="tests.test_b.TestGroup" name="test_three" time="0.4"/>'
        '</testsuite></testsuites>')
    assert file_durations([report, tmp_path / "shard-1.xml"]) == {"test_a.py": 3.8, "test_b.py": 0.4}


def test_files_are_dealt_longest_first_to_the_least_loaded_shard(tmp_path):
    files = []
    for name in ("test_long.py", "test_mid.py", "test_short.py", "test_tiny.py", "test_new.py"):
        (tmp_path / name).write_text("x" * 3000)  # unmeasured: 3000 bytes weigh 2 s
        files.append(tmp_path / name)
    measured = {"test_long.py": 100.0, "test_mid.py": 60.0, "test_short.py": 30.0, "test_tiny.py": 1.0}
    groups = [[path.name for path in group] for group in shards(files, 2, measured)]
    assert groups == [["test_long.py"], ["test_mid.py", "test_short.py", "test_new.py", "test_tiny.py"]]


def test_the_durations_kept_are_the_databases_the_run_uses():
    assert database_kind({}) == "sqlite"
    assert database_kind({"TEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}) == "postgresql"
