"""fp map's pure part: parameters into runs, placeholders, the joblog and what --resume reruns."""

from __future__ import annotations

import pytest

from fireplug.errors import UsageError
from fireplug.map.params import MapRun, Outcome, fill, joblog_header, parse_param, read_joblog, runs_from_lines, runs_from_params, to_rerun

TEMPLATE = ["python", "model.py", "-v", "-f{fold}", "--seed", "{seed}"]


def test_the_cartesian_product_varies_the_first_parameter_slowest() -> None:
    runs = runs_from_params([parse_param("fold=0,1"), parse_param("seed=7,8,9")], TEMPLATE)
    assert [run.argv[3:] for run in runs] == [
        ("-f0", "--seed", "7"),
        ("-f0", "--seed", "8"),
        ("-f0", "--seed", "9"),
        ("-f1", "--seed", "7"),
        ("-f1", "--seed", "8"),
        ("-f1", "--seed", "9"),
    ]
    assert [run.seq for run in runs] == [1, 2, 3, 4, 5, 6]
    assert runs[4].env() == [("FP_RUN_INDEX", "4"), ("FP_PARAM_FOLD", "1"), ("FP_PARAM_SEED", "8")]
    assert runs[4].command_line == "python model.py -v -f1 --seed 8"


def test_placeholders_are_replaced_inside_words_never_through_a_shell() -> None:
    runs = runs_from_params([parse_param("name=a b;rm -rf ~")], ["echo", "x{name}y"])
    assert runs[0].argv == ("echo", "xa b;rm -rf ~y")
    assert runs[0].command_line == "echo 'xa b;rm -rf ~y'"


def test_an_args_file_gives_one_run_per_line_with_its_columns() -> None:
    runs = runs_from_lines(["0\t0.1\n", "\n", "1\t0.01\r\n"], ["python", "m.py", "{1}", "--lr={2}", "{}"])
    assert [run.argv for run in runs] == [("python", "m.py", "0", "--lr=0.1", "0\t0.1"), ("python", "m.py", "1", "--lr=0.01", "1\t0.01")]
    assert runs[1].env() == [("FP_RUN_INDEX", "1"), ("FP_PARAM_1", "1"), ("FP_PARAM_2", "0.01")]
    assert runs[1].shown_params == {"1": "1", "2": "0.01"}


BAD_PARAMS = {"no-equals": "fold", "empty-value": "fold=0,,1", "trailing-comma": "fold=0,", "bad-name": "2fold=1", "dash-name": "my-fold=1"}


@pytest.mark.parametrize("text", BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_a_malformed_parameter_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_param(text)


def test_a_placeholder_naming_no_parameter_is_refused_before_anything_runs() -> None:
    with pytest.raises(UsageError, match=r"\{flod\}, which is no parameter \(there are: \{fold\}\)"):
        runs_from_params([parse_param("fold=0,1")], ["python", "m.py", "{flod}"])


def test_a_command_without_placeholders_is_refused() -> None:
    with pytest.raises(UsageError, match="no placeholder"):
        runs_from_params([parse_param("fold=0,1")], ["python", "m.py"])


def test_a_parameter_given_twice_and_an_empty_args_file_are_refused() -> None:
    with pytest.raises(UsageError, match="given twice"):
        runs_from_params([parse_param("a=1"), parse_param("a=2")], ["x", "{a}"])
    with pytest.raises(UsageError, match="no line"):
        runs_from_lines(["\n", "  \n"], ["x", "{1}"])


def test_braces_that_are_no_placeholder_stay() -> None:
    assert fill(["awk", "{print $1}", "{a}", "{ x }"], {"a": "1"}) == ("awk", "{print $1}", "1", "{ x }")


def test_the_joblog_is_gnu_parallels_format_and_reads_back() -> None:
    outcomes = [Outcome(1, "aws02", 1733212345.5, 2.0625, 0, 0, "python m.py -f0"), Outcome(2, "aws03", 1733212346.0, 1.5, 3, 0, "python m.py -f1")]
    text = joblog_header() + "\n" + "".join(outcome.line() + "\n" for outcome in outcomes)
    assert text.splitlines()[0] == "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    assert text.splitlines()[1] == "1\taws02\t1733212345.500\t2.062\t0\t0\t0\t0\tpython m.py -f0"
    read = read_joblog(text + "2\taws02\t1733212350.000\t1.000\t0\t0\t0\t0\tpython m.py -f1\n")  # run 2 again, later: the last line counts
    assert read[1].succeeded and read[2].succeeded and read[2].host == "aws02"


def test_a_damaged_joblog_is_refused() -> None:
    with pytest.raises(UsageError, match="not a joblog"):
        read_joblog("Seq Host\n")
    with pytest.raises(UsageError, match="line 2"):
        read_joblog(joblog_header() + "\nx\ty\n")


def runs_of(count: int) -> list[MapRun]:
    return runs_from_params([parse_param("fold=" + ",".join(str(index) for index in range(count)))], ["python", "m.py", "{fold}"])


def test_resume_runs_what_the_joblog_lacks_and_resume_failed_also_what_failed() -> None:
    runs = runs_of(4)
    logged = {
        1: Outcome(1, "a", 0.0, 1.0, 0, 0, "python m.py 0"),
        2: Outcome(2, "a", 0.0, 1.0, 1, 0, "python m.py 1"),
        3: Outcome(3, "b", 0.0, 1.0, 0, 2, "python m.py 2"),
    }
    assert [run.seq for run in to_rerun(runs, logged, failed_too=False)] == [4]
    assert [run.seq for run in to_rerun(runs, logged, failed_too=True)] == [2, 3, 4]


def test_resuming_another_sweeps_joblog_is_refused() -> None:
    with pytest.raises(UsageError, match="not the same sweep"):
        to_rerun(runs_of(2), {1: Outcome(1, "a", 0.0, 1.0, 0, 0, "python other.py 0")}, failed_too=True)


def test_an_integer_range_stands_for_its_values() -> None:
    assert parse_param("fold=0..3") == ("fold", ["0", "1", "2", "3"])
    assert parse_param("k=3..1,x,10..11") == ("k", ["3", "2", "1", "x", "10", "11"])
    assert parse_param("v=1.5..2") == ("v", ["1.5..2"]), "only integers make a range"
