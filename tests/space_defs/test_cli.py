import argparse
import subprocess
import sys
from dataclasses import dataclass

import pytest

from space_defs import DataShape
from space_defs.cli import Parser, UsageError, add_fields, given, number, option


@dataclass(frozen=True)
class Knobs:
    count: int = option(3, help="how many, in items")
    rate: float = option(0.5, help="a rate, 50% = 0.5")
    name: str = option("a", help="a name")
    flag: bool = option(True, help="on or off")
    cap: float | None = option(None, help="none = no cap")
    tags: tuple[str, ...] = option(("x", "y"), help="labels")
    pair: tuple[int, float] = option((1, 2.0), help="two numbers")


def _parse(*argv, **kw):
    p = Parser(prog="prog")
    add_fields(p, Knobs, **kw)
    return p.parse_args(argv)


def test_usage_error_is_a_value_error():
    assert issubclass(UsageError, ValueError)


@pytest.mark.parametrize("text, value", [("0.1", 0.1), ("8/255", 8 / 255), (" 2e-4 ", 2e-4), ("3", 3.0)])
def test_number(text, value):
    assert number(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [("0.8/255", 0.8 / 255), ("8/255", 8 / 255),
                                         ("4/1275", 4 / 1275), ("2e-4", 2e-4), ("0.5", 0.5),
                                         (" 1.5 / 3 ", 0.5), ("1e-3/2", 5e-4)])
def test_number_takes_fractions_with_decimals(text, value):
    assert number(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["eight", "1/0", "", "8/", "1/2/3", "inf", "nan/2"])
def test_number_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        number(text)


def test_only_given_flags_reach_the_namespace_and_defaults_stay_the_class_s():
    args = _parse("--count", "7", "--cap", "none", "--tags", "p,q,r")
    assert given(args, Knobs) == {"count": 7, "cap": None, "tags": ("p", "q", "r")}
    assert Knobs(**given(args, Knobs)) == Knobs(count=7, tags=("p", "q", "r"))
    assert given(_parse(), Knobs) == {}


def test_values_are_parsed_by_the_annotation():
    args = _parse("--rate", "1/4", "--flag", "false", "--cap", "8/255", "--pair", "4,0.5", "--name", "b")
    assert given(args, Knobs) == {"rate": 0.25, "flag": False, "cap": pytest.approx(8 / 255),
                                  "pair": (4, 0.5), "name": "b"}


def test_skip_only_and_prefix():
    assert given(_parse("--count", "1", skip=("rate",)), Knobs) == {"count": 1}
    p = Parser(prog="prog")
    add_fields(p, Knobs, only=("count",), prefix="knob-")
    args = p.parse_args(["--knob-count", "2"])
    assert given(args, Knobs, prefix="knob-") == {"count": 2} and given(args, Knobs) == {}
    with pytest.raises(SystemExit):
        p.parse_args(["--knob-rate", "1"])


def test_help_has_the_field_help_and_default(capsys):
    with pytest.raises(SystemExit) as exited:
        _parse("--help")
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--count COUNT how many, in items (default: 3)", "50% = 0.5 (default: 0.5)",
                 "none = no cap (default: none)", "labels (default: x,y)"):
        assert text in out


@pytest.mark.parametrize("argv, says", [
    (("--count", "x"), "not an integer: 'x'"), (("--rate", "fast"), "not a number"),
    (("--flag", "maybe"), "not true or false"), (("--pair", "1"), "need 2 comma-separated values"),
    (("--cap", "big"), "not a number"), (("--bogus",), "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        _parse(*argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and says in err and err.endswith("(see prog --help)\n")


def test_unsupported_annotations_fail_when_the_parser_is_built():
    @dataclass
    class Bad:
        mapping: dict = option(None, help="no flag for this")

    with pytest.raises(TypeError, match="unsupported"):
        add_fields(Parser(), Bad)


def test_data_shape_flags_round_trip():
    p = Parser(prog="prog")
    add_fields(p, DataShape)
    args = p.parse_args(["--in-channels", "1", "--input-size", "8"])
    assert DataShape(**given(args, DataShape)) == DataShape(in_channels=1, num_classes=10, input_size=8)


def test_space_defs_preview_takes_the_data_shape():
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "space_defs", "--budget", "500K", "--space",
                               "uniform", "-n", "2", *argv], capture_output=True, text=True)

    ok = run("--in-channels", "1", "--input-size", "8")
    assert ok.returncode == 0 and ok.stdout.count("sample") == 2, ok.stderr
    bad = run("--num-classes", "1")
    assert bad.returncode == 2 and "DataShape.num_classes" in bad.stderr and bad.stderr.count("\n") == 1


def test_the_preview_takes_the_space_options():
    def preview(*argv):
        return subprocess.run([sys.executable, "-m", "space_defs", *argv], capture_output=True, text=True)

    # the demo's space: digits' shape, 1-2 blocks, channels in multiples of 4
    ok = preview("--budget", "60K", "-n", "3", "--in-channels", "1", "--input-size", "8", "--min-blocks", "1",
                 "--max-blocks", "2", "--channel-multiple", "4", "--max-macs", "2G", "--tolerance", "0.02")
    assert ok.returncode == 0 and ok.stdout.count("sample") == 3 and "+- 2.0%" in ok.stdout, ok.stderr
    assert ok.stdout.count("baseline     2-2-2") == 2  # the uniform and reduced WRN shapes
    for argv, says in ((["--max-blocks", "0"], "min blocks"), (["--max-macs", "10X"], "invalid budget"),
                       (["--space", "nope"], "unknown space")):
        bad = preview("--budget", "60K", *argv)
        assert bad.returncode == 2 and says in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
