"""The fleet benchmark's quick variant (figure 6) keeps working: a real MLflow server on PostgreSQL with basic-auth,
a small fleet polling it directly and through the registry cache. It asserts the result's shape, that every poll
succeeded and that the cache answered, nothing about time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _postgres_reachable() -> bool:
    import psycopg2

    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.mark.slow
def test_fleet_bench_quick_polls_without_errors(tmp_path):
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 as postgres; the fleet benchmark needs it")
    out_json = tmp_path / "fleet.json"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet_bench.py"), "--quick", "--json", str(out_json)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout  # the JSON result is the last thing on stdout
    result = json.loads(text if text.startswith("{") else text[text.index("\n{") + 1:])
    assert result == json.loads(out_json.read_text())
    assert set(result) >= {"figures", "details", "machine", "command"}
    (fig,) = result["figures"]
    assert fig["id"] == "6" and fig["target"] == ">= 1000 devices"
    assert {"name", "ours", "ours_text", "baseline_text", "ratio", "met", "limits"} <= set(fig)
    (direct,) = result["details"]["direct_steps"]
    (cached,) = result["details"]["cached_steps"]
    for step in (direct, cached):
        assert step["devices"] == 20 and step["lookups"] > 0
        assert step["errors"] == 0, step["error_kinds"]
        assert step["fallbacks"] == 0, "the seeded registry has the production alias; no poll should need the fallback"
    assert direct["cpu"]["server_pct"] > 0, "the server's CPU must be measured"
    assert direct["cache_status"] == {}, "the baseline must not go through the cache"
    # Through the cache most answers are its own, and MLflow answered at least the first of each model.
    assert cached["cache_status"]["HIT"] > cached["cache_status"].get("MISS", 0) + cached["cache_status"].get(
        "EXPIRED", 0) > 0, cached["cache_status"]
    assert result["details"]["server"]["auth"].startswith("basic-auth")
    assert result["details"]["registry_cache"]["ttl"] == "1s"
