"""Ctrl-C during start-up (importing TensorFlow, loading the models, enrolling) is one line and exit code 130
(issue 14, item 15): a real `python main.py` process, a real SIGINT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(delay, tmp_path):
    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    shutil.copy2(DATA / "people" / "Juanes" / "Juanes_0001.jpg", tmp_path / "data" / "Juanes")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--input",
         str(DATA / "misc" / "two_people.jpg"), "--weights_path", str(tmp_path / "weights")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job inherits SIGINT ignored
    time.sleep(delay)
    assert process.poll() is None, "the run ended before the interrupt; the test would prove nothing"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C)"
    assert len([line for line in stderr.splitlines() if "interrupted" in line]) == 1
    assert stdout == ""
