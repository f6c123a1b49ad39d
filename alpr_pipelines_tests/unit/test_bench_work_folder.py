"""bench/common.work_folder: a benchmark's work folder is removed when the script ends, and kept (its path printed)
when the script fails on an error, whose message may point to a log in it."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
from common import work_folder
work = work_folder("alpr-test-")
(work / "server.log").write_text("what a failing run's error points to")
print(work, flush=True)
if sys.argv[1] == "fail":
    raise RuntimeError("the run failed")
"""


def run(how: str, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    script = tmp_path / "bench_like.py"
    script.write_text(SCRIPT.format(bench=str(BENCH)))
    out = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=60,
                         env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    return Path(out.stdout.strip()), out


def test_the_work_folder_is_removed_when_the_script_ends(tmp_path):
    work, out = run("succeed", tmp_path)
    assert out.returncode == 0, out.stderr
    assert work.parent == tmp_path and work.name.startswith("alpr-test-") and not work.exists()


def test_a_failed_run_keeps_its_work_folder_and_says_where(tmp_path):
    work, out = run("fail", tmp_path)
    assert out.returncode == 1 and "RuntimeError: the run failed" in out.stderr
    assert (work / "server.log").is_file()
    assert f"kept {work}: the run failed" in out.stderr
