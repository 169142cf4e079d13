import pickle

from trainer.status import TERMINAL, Status


def test_every_status_has_its_stored_value_and_a_one_line_meaning():
    assert [s.value for s in Status] == ["running", "finished", "stopped_early", "diverged",
                                         "catastrophic_overfit", "failed", "lost", "env_failed"]
    for s in Status:
        assert s == s.value and f"{s}" == s.value and Status(s.value) is s
        assert s.meaning and "\n" not in s.meaning
    assert pickle.loads(pickle.dumps(Status.LOST)) is Status.LOST


def test_terminal_is_every_status_but_running():
    assert TERMINAL == set(Status) - {Status.RUNNING}
    assert "finished" in TERMINAL and "running" not in TERMINAL
