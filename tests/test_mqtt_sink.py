"""MQTT sink against a real mosquitto that the tests start on a loopback port (tests/mqttbroker.py):
topics, QoS 1, retained availability and the last will, a broker stopped and restarted mid-stream
(nothing lost; duplicates counted), a broker frozen (no PUBACK: timeout, resend), start-up policy,
credentials, Home Assistant discovery. Skipped without mosquitto, failed in CI without it."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
from mqttbroker import Broker, Subscriber, free_port
from test_sinks import ev

from edge.config import config_from_data
from edge.errors import EX_UNAVAILABLE, SinkError
from edge.journal import Journal
from edge.sinks import MqttSinkConfig, create_sink

FAST = {"initial_s": 0.05, "max_s": 0.3}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(port: int, *topics: str, session: str | None = None) -> Subscriber:
        made.append(Subscriber(port, *topics, session=session))
        return made[-1]
    yield make
    for s in made:
        s.close()


def mqtt_sink(port: int, device: str, **kw):
    return create_sink(MqttSinkConfig(type="mqtt", host="127.0.0.1", port=port, device=device, reconnect=FAST, **kw),
                       "mqtt")


def seqs(messages) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in messages if "/events/" in m.topic]


def test_events_in_order_qos1_per_camera_topics_and_retained_availability(broker, subscribers):
    sub = subscribers(broker.port, "edge-tsm/t1/#")
    sink = mqtt_sink(broker.port, "t1")
    sink.open()
    events = [ev(i, "start" if i % 2 == 0 else "end", camera="door" if i % 3 else "yard") for i in range(30)]
    for e in events:
        sink.submit(e)
    got = [m for m in sub.wait(lambda ms: len(seqs(ms)) >= 30) if "/events/" in m.topic]
    assert [m.payload for m in got] == [json.dumps(e, separators=(",", ":")).encode() for e in events]
    assert [m.topic for m in got] == [f"edge-tsm/t1/events/{e['camera']}" for e in events]
    assert {m.qos for m in got} == {1}
    late = subscribers(broker.port, "edge-tsm/t1/availability")  # joins later: gets the retained state
    assert [(m.payload, m.retain) for m in late.wait(lambda ms: len(ms) >= 1)] == [(b"online", True)]
    assert sink.close() == 0
    assert [m.payload for m in sub.wait(lambda ms: len(ms) >= 32) if m.topic.endswith("/availability")] == \
        [b"online", b"offline"]                 # a clean close says offline itself (the will is not sent)
    after = subscribers(broker.port, "edge-tsm/t1/availability")
    assert [(m.payload, m.retain) for m in after.wait(lambda ms: len(ms) >= 1)] == [(b"offline", True)]
    assert sink.stats().items() >= {"delivered": 30, "dropped": 0, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()


def test_last_will_says_offline_when_the_process_is_killed(broker, subscribers):
    sub = subscribers(broker.port, "edge-tsm/victim/availability")
    code = ("import time\nfrom edge.sinks import MqttSinkConfig, create_sink\n"
            f"s = create_sink(MqttSinkConfig(type='mqtt', host='127.0.0.1', port={broker.port}, device='victim'), "
            "'mqtt')\ns.open()\nprint('open', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        sub.wait(lambda ms: [m.payload for m in ms][-1:] == [b"online"])
        proc.send_signal(signal.SIGKILL)        # no clean close: the broker publishes the will
        proc.wait(10)
        assert [m.payload for m in sub.wait(lambda ms: len(ms) >= 2)][-1] == b"offline"
    finally:
        proc.kill()
        proc.wait(10)
    after = subscribers(broker.port, "edge-tsm/victim/availability")
    assert [(m.payload, m.retain) for m in after.wait(lambda ms: len(ms) >= 1)] == [(b"offline", True)]


def run_outage(tmp_path, subscribers, outage, n: int = 300) -> tuple[list[int], list[int], int]:
    """A journaled sink delivering ``n`` events produced at a steady pace; ``outage(broker, sink)`` is
    called once about a third are through. Returns (seqs the subscriber got, seqs journaled, failed
    writes: each one an event the sink sent again)."""
    broker = Broker(tmp_path / "broker", persist=True).start()  # sessions survive the restart
    journal = Journal(tmp_path / "journal", fsync="never")
    sub = subscribers(broker.port, "edge-tsm/r/events/#", session="edge-tsm-test-subscriber")
    sink = mqtt_sink(broker.port, "r", timeout_s=0.5)
    sink.attach_journal(journal)
    sink.open()
    stop = threading.Event()

    def produce() -> None:
        for i in range(n):
            journal.append({k: v for k, v in ev(i).items() if k != "seq"})
            if stop.wait(0.003):
                return
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert sink.wait_for(lambda st: st["delivered"] >= n // 3, 10)
        outage(broker, sink)
        producer.join(20)
        assert sink.wait_for(lambda st: st["delivered"] >= n and st["pending"] == 0, 20), sink.stats()
        assert journal.cursor("mqtt") == journal.last_seq == n
        got = seqs(sub.wait(lambda ms: set(seqs(ms)) >= set(range(1, n + 1)), 20))
        assert sink.close() == 0
        resent = sink.stats()["errors"]
    finally:
        stop.set()
        producer.join(5)
        sink.close()
        broker.stop()
        journal.close()
    return got, list(range(1, n + 1)), resent


def check_outage(name: str, got: list[int], want: list[int], resent: int) -> None:
    """No event lost, first copies in order. Duplicates are allowed and counted: QoS 1 is at-least-once
    on both legs (the sink resends an event whose PUBACK it did not get; the broker redelivers to a
    persistent subscriber what it had not acknowledged), so consumers dedupe by seq."""
    firsts = list(dict.fromkeys(got))
    dups, lost = len(got) - len(set(got)), len(set(want) - set(got))
    print(f"\nMQTT | {name} | journaled {len(want)} | received {len(got)} | duplicates {dups} | lost {lost} | "
          f"sink resends {resent}")
    assert lost == 0 and firsts == want


def test_broker_restart_mid_stream_loses_nothing(tmp_path, subscribers, caplog):
    def restart(broker: Broker, sink) -> None:
        broker.stop()
        assert sink.wait_for(lambda st: st["state"] == "reconnecting", 10)
        broker.start()

    with caplog.at_level(logging.INFO, logger="edge.sinks"):
        got, want, resent = run_outage(tmp_path, subscribers, restart)
    check_outage("broker stopped and restarted", got, want, resent)
    assert "write failed" in caplog.text and "delivering again" in caplog.text


def test_a_frozen_broker_times_out_and_the_event_is_resent(tmp_path, subscribers, caplog):
    def freeze(broker: Broker, sink) -> None:
        broker.proc.send_signal(signal.SIGSTOP)  # TCP still up, no PUBACK: only the timeout notices
        try:
            assert sink.wait_for(lambda st: st["state"] == "reconnecting", 10)
        finally:
            broker.proc.send_signal(signal.SIGCONT)

    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        got, want, resent = run_outage(tmp_path, subscribers, freeze, n=150)
    check_outage("broker frozen (SIGSTOP), no PUBACK", got, want, resent)
    assert "no acknowledgement from the broker within 0.5 s" in caplog.text


def test_unreachable_at_start_fails_with_require_and_retries_by_default(tmp_path, subscribers, caplog):
    port = free_port()
    with pytest.raises(SinkError) as e:
        mqtt_sink(port, "u", connect_at_start="require").open()
    assert e.value.exit_code == EX_UNAVAILABLE and "\n" not in str(e.value)
    assert f"sink mqtt: broker 127.0.0.1:{port}: cannot connect (Connection refused)" in str(e.value)
    sink = mqtt_sink(port, "u")
    with caplog.at_level(logging.WARNING, logger="edge.sinks"):
        sink.open()                             # runs; the events wait (here in its queue) for the broker
    assert "running without it and retrying" in caplog.text and sink.stats()["state"] == "reconnecting"
    for i in range(3):
        sink.submit(ev(i))
    broker = Broker(tmp_path / "late", port=port).start()
    try:
        assert sink.wait_for(lambda st: st["delivered"] == 3 and st["state"] == "open", 10), sink.stats()
        sub = subscribers(port, "edge-tsm/u/availability")
        assert [m.payload for m in sub.wait(lambda ms: len(ms) >= 1)] == [b"online"]
        assert sink.close() == 0
    finally:
        broker.stop()


def test_home_assistant_discovery_configs_arrive_retained(broker, subscribers):
    sink = mqtt_sink(broker.port, "ha.box", ha_discovery=True)
    sink.announce(["door"])                      # known at start; 'yard' is announced at its first event
    sink.open()
    early = subscribers(broker.port, "homeassistant/#", "edge-tsm/ha.box/events/#")
    door = early.wait(lambda ms: len(ms) >= 1)[0]
    assert door.topic == "homeassistant/sensor/ha_box/door/config" and door.retain
    cfg = json.loads(door.payload)
    assert cfg["state_topic"] == "edge-tsm/ha.box/events/door" and cfg["value_template"] == "{{ value_json.label }}"
    assert cfg["availability_topic"] == "edge-tsm/ha.box/availability" and cfg["unique_id"] == "edge_tsm_ha_box_door"
    assert cfg["device"]["identifiers"] == ["edge_tsm_ha_box"]
    sink.submit(ev(0, camera="yard"))
    got = early.wait(lambda ms: len(ms) >= 3)
    assert [m.topic for m in got[1:]] == ["homeassistant/sensor/ha_box/yard/config", "edge-tsm/ha.box/events/yard"]
    assert sink.close() == 0


def test_credentials_come_from_a_file_and_a_refusal_fails_at_start(tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edge", "s3cret"], check=True, capture_output=True)
    os.chmod(pw, 0o644)
    broker = Broker(tmp_path / "auth", extra=f"password_file {pw}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    try:
        good, bad = tmp_path / "good", tmp_path / "bad"
        good.write_text("s3cret\n")             # one line; the newline is not part of it
        bad.write_text("wrong\n")
        sink = mqtt_sink(broker.port, "auth", username="edge", password_file=str(good))
        sink.open()
        sink.submit(ev(0))
        assert sink.wait_for(lambda st: st["delivered"] == 1, 10) and sink.close() == 0
        with pytest.raises(SinkError, match=r"broker 127\.0\.0\.1:\d+: the broker refused the connection \(Not "
                                            r"authorized\)"):
            mqtt_sink(broker.port, "auth", username="edge", password_file=str(bad)).open()  # even with 'retry'
        with pytest.raises(SinkError, match=f"password_file {tmp_path}/nope: cannot read \\(No such file"):
            mqtt_sink(broker.port, "auth", username="edge", password_file=str(tmp_path / "nope")).open()
        with pytest.raises(SinkError, match=f"tls.ca_file {tmp_path}/ca.pem: cannot read"):
            mqtt_sink(broker.port, "auth", tls={"ca_file": str(tmp_path / "ca.pem")}).open()
    finally:
        broker.stop()


def test_defaults_and_config_errors():
    base = {"cameras": [{"name": "c", "source": 0}]}
    cfg = config_from_data({**base, "sinks": [{"type": "mqtt", "host": "broker.lan"}]}).sinks[0]
    sink = create_sink(cfg, "mqtt")
    host = sink.device
    assert sink.durable and (sink.port, sink.prefix, sink.client_id) == (1883, f"edge-tsm/{host}", f"edge-tsm-{host}")
    assert sink.event_topic("door") == f"edge-tsm/{host}/events/door"
    tls = create_sink(MqttSinkConfig(type="mqtt", host="b", tls={}, topic_prefix="site/3"), "m")
    assert (tls.port, tls.availability_topic) == (8883, "site/3/availability")
    from edge.errors import ConfigError
    for sink_cfg, msg in [({"type": "mqtt"}, "sinks[0].host: required key missing"),
                          ({"type": "mqtt", "host": "b", "topic_prefix": "a/#"}, "sinks[0].topic_prefix: expected"),
                          ({"type": "mqtt", "host": "b", "password": "x"}, "sinks[0].password: unknown key"),
                          ({"type": "mqtt", "host": "b", "password_file": "/p"}, "password_file needs username"),
                          ({"type": "mqtt", "host": "b", "qos": 3}, "sinks[0].qos: expected 0, 1 or 2"),
                          ({"type": "mqtt", "host": "a" * 64 + ".lan"}, "sinks[0].host: expected a host name"),
                          ({"type": "mqtt", "host": "a..b"}, "sinks[0].host: expected a host name")]:
        with pytest.raises(ConfigError) as e:
            config_from_data({**base, "sinks": [sink_cfg]})
        assert msg in str(e.value)


@pytest.mark.parametrize("missing, want", [("paho.mqtt.client", "needs the paho-mqtt package"),
                                           ("paho.mqtt.enums", "needs paho-mqtt 2.0 or later")])
def test_missing_paho_says_what_to_install(monkeypatch, missing, want):
    monkeypatch.delitem(sys.modules, "edge.sinks.mqtt", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(SinkError) as e:
        create_sink(MqttSinkConfig(type="mqtt", host="b"), "mqtt")
    assert want in str(e.value) and "pip install 'edge-tsm[mqtt]'" in str(e.value)
