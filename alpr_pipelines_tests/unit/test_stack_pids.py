"""``stack down`` signals only the processes it started: a PID is checked with its start time and command line."""

import subprocess
import sys

from alpr_pipelines.settings import load_settings
from alpr_pipelines.stack import process
from alpr_pipelines.stack.process import Service


def test_a_reused_pid_is_not_taken_for_our_service(tmp_path):
    settings = load_settings({"ALPR_HOME": str(tmp_path)})
    svc = Service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], None, "time.sleep(60)")
    proc = process._start(settings, svc, {})
    try:
        pidfile = settings.stack_dir / "run" / "sleeper.pid"
        pid, started = pidfile.read_text().split()
        assert int(pid) == proc.pid and started.isdigit()
        for _ in range(50):  # until it has exec'd its own command line
            if process._our_pid(settings, svc) == proc.pid:
                break
            subprocess.run(["sleep", "0.05"])
        assert process._our_pid(settings, svc) == proc.pid
        pidfile.write_text(f"{pid} {int(started) + 1}")  # same PID and command line, another start: not ours
        assert process._our_pid(settings, svc) is None
        pidfile.write_text(pid)  # a pidfile from before start times were recorded: the command line decides
        assert process._our_pid(settings, svc) == proc.pid
    finally:
        proc.kill()
        proc.wait()
