"""Fault injection for the MQTT sink against a real daemon subprocess and a real mosquitto: the broker
is stopped mid-stream and started again on the same port; what a persistent-session subscriber got
is compared with the journal. QoS 1 is at-least-once, so duplicates are counted, not failed; a lost
event fails. Same FAULT summary line as test_faults.py."""
from __future__ import annotations

import json
import time

from mqttbroker import Broker, Subscriber
from test_faults import (
    Daemon,
    assets,  # noqa: F401 - the module-scoped fixture (tiny bundle, colour video)
    base_cfg,
    journal_seqs,
    log_lines,
    report,
    seqs_of,
)
from waiting import wait_until


def test_mqtt_broker_restarted_mid_stream(assets, tmp_path):  # noqa: F811
    broker = Broker(tmp_path / "broker", persist=True).start()
    sub = Subscriber(broker.port, "edge-tsm/fault/events/#", session="edge-tsm-fault-subscriber")
    log = tmp_path / "events.jsonl"
    d = Daemon(tmp_path, base_cfg(assets, tmp_path, True, [
        {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "device": "fault", "timeout_s": 2.0,
         "reconnect": {"initial_s": 0.1, "max_s": 0.5}},
        {"type": "log", "path": str(log)}]))

    def got() -> list[int]:
        with sub.cond:
            return [json.loads(m.payload)["seq"] for m in sub.messages]
    d.start()
    try:
        d.wait(lambda: len(got()) >= 6)
        broker.stop()
        n = len(log_lines(log))
        d.wait(lambda: len(log_lines(log)) >= n + 4)  # events go on while the broker is away
        before = seqs_of(log_lines(log))
        broker.start()
        t_back = time.monotonic()
        d.wait(lambda: set(got()) >= set(before))  # the outage's backlog arrives
        recovery = time.monotonic() - t_back
        m = len(got())
        d.wait(lambda: len(got()) >= m + 2)       # and live events after it
        code, _ = d.stop()
        want = journal_seqs(tmp_path / "state")
        wait_until(lambda: set(got()) >= set(want), timeout=10, what="every journaled seq at the subscriber")
    finally:
        d.kill()
        sub.close()
        broker.stop()
    assert code == 0
    seqs = got()
    dups, lost = len(seqs) - len(set(seqs)), len(set(want) - set(seqs))
    report("mqtt broker stopped + restarted (same port, persistent subscriber)", 1, len(want),
           {"mqtt": len(seqs), "log": len(log_lines(log))}, dups, lost, recovery)
    assert lost == 0 and list(dict.fromkeys(seqs)) == want   # every event, first copies in journal order
    assert seqs_of(log_lines(log)) == want
    assert "write failed" in d.stderr and "delivering again" in d.stderr
