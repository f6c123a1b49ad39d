"""The promotion lock serializes Production changes across processes, whatever their Dagster instance: a file lock
under ALPR_HOME on the embedded stack, a PostgreSQL advisory lock where ALPR_PROMOTION_LOCK_URL names a database."""

import subprocess
import sys

import psycopg2
import pytest

from alpr_pipelines.lib.promotion_lock import PromotionLockTimeout, promotion_lock

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOLD = """
import sys, time
from alpr_pipelines.lib.promotion_lock import promotion_lock
with promotion_lock("alpr-vehicle-detector", env={ENV}):
    print("held", flush=True)
    time.sleep(30)
"""


def _holder(env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.replace("{ENV}", repr(env))], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _postgres_reachable() -> bool:
    try:
        psycopg2.connect(PG_URL, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.mark.parametrize("backend", ["file", "postgres"])
def test_a_second_process_waits_and_gets_the_lock_once_the_first_dies(backend, tmp_path):
    if backend == "postgres" and not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    env = {"ALPR_HOME": str(tmp_path)} if backend == "file" else {"ALPR_PROMOTION_LOCK_URL": PG_URL}
    holder = _holder(env)
    try:
        with pytest.raises(PromotionLockTimeout, match="alpr-vehicle-detector"):
            with promotion_lock("alpr-vehicle-detector", wait_s=0.5, env=env):
                pass
        with promotion_lock("alpr-plate-detector", wait_s=0.5, env=env):  # another model is not held up
            pass
    finally:
        holder.kill()  # a holder that dies releases it (the kernel, or the closed database session)
        holder.wait()
    with promotion_lock("alpr-vehicle-detector", wait_s=0.5, env=env):  # free at once: no wait
        pass


def test_an_unreachable_lock_database_is_a_clear_error():
    from alpr_pipelines.lib.promotion_lock import PromotionLockError

    with pytest.raises(PromotionLockError, match="ALPR_PROMOTION_LOCK_URL"):
        with promotion_lock("m", env={"ALPR_PROMOTION_LOCK_URL": "postgresql://x@127.0.0.1:9/none"}):
            pass


def test_a_lock_url_that_is_not_postgresql_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ALPR_PROMOTION_LOCK_URL"):
        with promotion_lock("m", env={"ALPR_PROMOTION_LOCK_URL": "redis://x"}):
            pass
