"""One objective syntax for search.run and search.query: '-name' minimises, '+name' maximises, a
bare name takes the metric's natural direction."""

import pandas as pd
import pytest

from search.db.errors import UsageError
from search.db.objectives import DIRECTIONS, Objective, described, parse_objectives
from search.db.pareto import pareto_front


@pytest.mark.parametrize("text, name, mode", [
    ("val_robust_acc", "val_robust_acc", "max"),
    ("macs", "macs", "min"),  # a bare name: its natural direction
    ("params", "params", "min"),
    ("best_val_clean_acc", "best_val_clean_acc", "max"),
    ("gpu_hours", "gpu_hours", "min"),
    ("-macs", "macs", "min"),
    ("+macs", "macs", "max"),  # a sign says the direction, whatever the natural one
    ("-val_robust_acc", "val_robust_acc", "min"),
    ("+val_robust_acc", "val_robust_acc", "max"),
    (" depth1 ", "depth1", "max"),  # a column without a natural direction: maximised
    ("-depth1", "depth1", "min"),
])
def test_a_sign_says_the_direction_and_a_bare_name_takes_its_natural_one(text, name, mode):
    objective = Objective.parse(text)
    assert (objective.name, objective.mode) == (name, mode)
    assert Objective.parse(objective.spelled) == objective  # the stored spelling means the same
    assert str(objective) == f"{name} ({mode})"


def test_the_spelling_is_bare_in_the_natural_direction_signed_against_it():
    assert [o.spelled for o in parse_objectives("-macs,+val_robust_acc,+params,depth1,-depth2")] \
        == ["macs", "val_robust_acc", "+params", "depth1", "-depth2"]
    assert set(DIRECTIONS.values()) == {"max", "min"}


def test_both_commands_print_the_same_line():
    assert described(parse_objectives("val_robust_acc,macs")) == \
        "objectives: val_robust_acc (max), macs (min)"


@pytest.mark.parametrize("spec, message", [
    ("", "empty objective"), ("val_robust_acc,-", "empty objective"), ((), "no objectives"),
    ("macs,-macs", "give each once"),
])
def test_bad_objectives(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_objectives(spec)


def test_the_front_uses_the_natural_direction_of_a_bare_name():
    df = pd.DataFrame({"best_val_robust_acc": [0.5, 0.5, 0.4], "macs": [10, 5, 1]})
    assert list(pareto_front(df, "val_robust_acc,macs").index) == [1, 2]
    assert list(pareto_front(df, "val_robust_acc,-macs").index) == [1, 2]
    assert list(pareto_front(df, "val_robust_acc,+macs").index) == [0]
