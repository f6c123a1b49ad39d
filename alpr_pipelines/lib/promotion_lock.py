"""One lock per registered model around every change of its Production version, whoever makes it.

The sensor's runs, the UI's jobs and ``alpr promote``/``rollback`` may run on different Dagster instances (another
``DAGSTER_HOME``), so Dagster's pool alone does not serialize them. The compare-and-swap in
``lib.promotion.apply_decision`` (is Production still the champion the candidate was judged against?) and the change
itself run under this lock, so no two changes of one model interleave. Evaluation stays outside it: a slow candidate
never holds up a rollback.

Where the lock lives:
    ALPR_PROMOTION_LOCK_URL=postgresql://USER@HOST:PORT/DB: a PostgreSQL advisory lock (the production profile and
        the compose stack point it at the Dagster database), shared by every machine that reaches it.
    unset: a file lock, ``$ALPR_HOME/locks/promotion-<model>.lock`` (the embedded stack: one machine, one
        ``ALPR_HOME``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alpr_pipelines.settings import load_settings

WAIT_S = 120.0  # the locked section is a few registry calls; a holder this long has hung


class PromotionLockError(Exception):
    """The lock could not be taken: its database is unreachable, or another change held it past the wait."""


class PromotionLockTimeout(PromotionLockError):
    """Another change of the same model held the lock for longer than the wait."""


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"alpr-promotion:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def _postgres_lock(url: str, name: str, wait_s: float) -> Iterator[None]:
    import psycopg2

    try:
        conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=10)
    except psycopg2.Error as exc:
        where = url.split("@")[-1]
        raise PromotionLockError(f"cannot reach the promotion lock's database {where} (ALPR_PROMOTION_LOCK_URL): "
                                 f"{str(exc).strip()}; nothing was changed") from exc
    try:
        conn.autocommit = True
        key = _advisory_key(name)
        deadline = time.monotonic() + wait_s
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise PromotionLockTimeout(f"another change of {name} has held its promotion lock (PostgreSQL "
                                               f"advisory lock {key}) for over {wait_s:.0f} s; try again later")
                time.sleep(0.2)
            yield
    finally:
        conn.close()  # ending the session releases its advisory locks


@contextmanager
def _file_lock(path: Path, name: str, wait_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PromotionLockTimeout(f"another change of {name} has held {path} for over {wait_s:.0f} s; "
                                               "try again later") from None
                time.sleep(0.1)
        yield  # the kernel drops the lock when the process dies
    finally:
        os.close(fd)


@contextmanager
def promotion_lock(name: str, wait_s: float = WAIT_S, env: dict[str, str] | None = None) -> Iterator[None]:
    """Hold ``name``'s promotion lock (see the module docstring for where it lives).

    Raises:
        PromotionLockError: its database is unreachable, or (``PromotionLockTimeout``) another change held it for
            ``wait_s`` seconds.
    """
    env = dict(os.environ if env is None else env)
    url = env.get("ALPR_PROMOTION_LOCK_URL", "").strip()
    if url:
        if not url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
            raise ValueError(f"ALPR_PROMOTION_LOCK_URL={url.split('@')[-1]!r} is not a postgresql:// URL; unset it "
                             "for a file lock under ALPR_HOME")
        with _postgres_lock(url, name, wait_s):
            yield
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    with _file_lock(load_settings(env).home / "locks" / f"promotion-{safe}.lock", name, wait_s):
        yield
