"""python -m edge.bench.ab on this tree, briefly: four real daemons (1, 2, 4 idle cameras; one at 15 fps with
fsync always and a unix subscriber); the figures hang together (what they are is docs/performance.md's)."""
from __future__ import annotations

import json

from edge.bench import ab


def test_ab_measures_a_real_daemon(capsys):
    assert ab.main(["--seconds", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["idle_cpu_pct"]) == {"1", "2", "4"} and all(v >= 0 for v in r["idle_cpu_pct"].values())
    per = (r["idle_cpu_pct"]["4"] - r["idle_cpu_pct"]["1"]) / 3
    assert abs(r["cpu_pct_per_idle_camera"] - round(per, 2)) < 0.01
    lat = r["latency_fsync_always_ms"]
    assert r["events"] >= 1 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"] < 5000
    assert 0 < r["ready_s"] < 120 and 0 < r["rss_mb"] <= r["peak_rss_mb"]
