"""maspo_verl.launch, the one launcher of verl runs: reading verl's file logger as it writes, and
a failing run (tests/test_e2e_kit.py, test_bench.py and conftest.py's shared session run real ones)."""

import json
import time

import pytest

from maspo_verl.launch import MetricsTail, RunFailed, RunResult, run_process


def test_the_tail_hands_over_each_complete_line_once_and_times_the_start_up(tmp_path):
    path = tmp_path / "metrics.jsonl"
    seen = []
    tail = MetricsTail(path, on_step=seen.append)
    tail.poll()  # no file yet
    first = {"step": 0, "data": {"val-core/x/acc/mean@1": 0.5}}
    second = {"step": 1, "data": {"timing_s/step": 0.25, "critic/score/mean": 0.1}}
    path.write_text(json.dumps(first) + "\n" + json.dumps(second)[:10])  # the second still being written
    tail.poll()
    assert seen == [first] and tail.startup_seconds is None
    time.sleep(0.3)
    path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    tail.poll()
    tail.poll()
    assert seen == [first, second]
    result = tail.result()
    # launch to the start of step 1: its arrival minus its own duration
    assert 0.3 - 0.25 <= result.startup_seconds <= result.seconds - 0.25 + 0.01
    assert RunResult([first, second, {"step": 1, "data": {"val-core/x/acc/mean@1": 0.6}}]).steps() == {
        0: first["data"],
        1: {**second["data"], "val-core/x/acc/mean@1": 0.6},
    }


def test_a_failing_run_raises_with_its_exit_status_and_log_tail(tmp_path):
    with pytest.raises(RunFailed) as failure:
        run_process(["+kit=tiny_cpu", "algorithm=no_such_preset"], tmp_path, timeout=300)
    message = str(failure.value)
    assert "exited 1" in message and "algorithm=no_such_preset" in message
    assert "no_such_preset" in message.split("last lines of", 1)[1]  # Hydra's own error, from train.log
    assert (tmp_path / "train.log").exists()


def test_a_session_trains_once_its_first_metrics_land(tmp_path):
    from maspo_verl.launch import SESSION_PROJECT, session_trains

    logs = tmp_path / SESSION_PROJECT
    logs.mkdir()
    assert not session_trains(tmp_path, 41)
    (logs / "run41_1.jsonl").write_text("")  # created, nothing logged yet
    (logs / "run4_1.jsonl").write_text('{"step": 1}\n')  # another process's session
    assert not session_trains(tmp_path, 41)
    (logs / "run41_2.jsonl").write_text('{"step": 1}\n')  # its second run trains (the first failed)
    assert session_trains(tmp_path, 41)
