"""GPIO sink: the pulse/level rules step by step on a fake clock, the sink with fake lines (waits on
events, no sleeps), the real gpiod adapter against a fake gpiod.Chip and against the missing device,
and the Jetson.GPIO adapter against a fake module and a real import that fails off a Jetson."""
from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path

import pytest
from fakegpio import FakeChip, FakeDriver, fake_jetson_gpio

from edge.config import config_from_data
from edge.errors import EX_UNAVAILABLE, ConfigError, SinkError
from edge.sinks import GpioSinkConfig, create_sink, gpio
from edge.sinks.gpio import LinePlan
from edge.sinks.gpio_lines import detect_driver, open_gpiod

LINES = {"swipe_left": 17, "zoom_in": 27}
FAST = {"initial_s": 0.02, "max_s": 0.1}


def ev(kind: str, label: str = "swipe_left", camera: str = "door") -> dict:
    return {"v": 1, "event": kind, "id": f"{camera}-1", "camera": camera, "label": label, "score": 0.9}


def cfg(**kw) -> GpioSinkConfig:
    return GpioSinkConfig(**{"type": "gpio", "driver": "gpiod", "lines": LINES, **kw})


@pytest.fixture
def driver(monkeypatch) -> FakeDriver:
    fake = FakeDriver()
    monkeypatch.setitem(gpio.DRIVERS, "gpiod", fake)
    return fake


# --- the rules, on a fake clock ----------------------------------------------------------------------
def test_plan_pulse_starts_restarts_and_expires_per_line():
    plan, key = LinePlan("pulse", 0.1), ("door", "swipe_left")
    assert plan.event(17, "start", key, now=0.0) is True
    assert plan.event(17, "end", key, now=0.02) is None        # ends do nothing in pulse mode
    assert plan.event(27, "start", key, now=0.05) is True
    assert plan.next_due() == pytest.approx(0.1)
    assert plan.event(17, "start", key, now=0.08) is None      # restarted, no new edge
    assert plan.expire(0.1) == []                              # 17 now runs to 0.18
    assert plan.expire(0.16) == [27] and plan.active() == [17]
    assert plan.expire(0.179) == [] and plan.expire(0.18) == [17]
    assert plan.next_due() is None and plan.active() == []


def test_plan_level_holds_while_any_camera_or_label_on_the_line_goes_on():
    plan = LinePlan("level", 0.1)
    assert plan.event(17, "start", ("door", "swipe_left"), 0) is True
    assert plan.event(17, "start", ("yard", "swipe_left"), 1) is None
    assert plan.event(17, "start", ("door", "wave"), 2) is None   # another label sharing line 17
    assert plan.event(17, "end", ("door", "swipe_left"), 3) is None
    assert plan.event(17, "end", ("yard", "swipe_left"), 4) is None
    assert plan.event(17, "end", ("door", "wave"), 5) is False
    assert plan.event(17, "end", ("door", "wave"), 6) is None     # an end without its start
    assert plan.next_due() is None and plan.active() == []
    plan.event(27, "start", ("door", "zoom_in"), 7)
    plan.clear()
    assert plan.active() == []


# --- the sink with fake lines ------------------------------------------------------------------------
def test_pulse_goes_inactive_after_pulse_ms_and_only_once(driver):
    sink = create_sink(cfg(pulse_ms=30), "gpio")
    sink.open()
    lines = driver.made[0]
    sink.submit(ev("start"))
    sink.submit(ev("end"))
    assert lines.wait_for(lambda f: len(f.log) == 2)
    (t_on, n1, on), (t_off, n2, off) = lines.log
    assert (n1, on, n2, off) == (17, True, 17, False)
    assert t_off - t_on >= 0.03
    assert sink.close() == 0
    assert lines.changes() == [(17, True), (17, False), (17, False), (27, False), ("close",)]
    assert sink.stats()["delivered"] == 2


def test_a_long_pulse_never_delays_another_line_and_close_cuts_it_when_aborted(driver):
    sink = create_sink(cfg(pulse_ms=10_000), "gpio")
    sink.open()
    lines = driver.made[0]
    sink.submit(ev("start", "swipe_left"))
    sink.submit(ev("start", "zoom_in"))
    sink.submit(ev("start", "swipe_left"))                       # restarts 17: no second edge
    assert sink.wait_for(lambda st: st["delivered"] == 3, 5)
    assert lines.state == {17: True, 27: True}
    assert sink.close(timeout=0.1) == 0                           # does not wait the 10 s out
    assert lines.changes() == [(17, True), (27, True), (17, False), (27, False), ("close",)]


def test_close_lets_a_pulse_in_progress_finish(driver):
    sink = create_sink(cfg(pulse_ms=50), "gpio")
    sink.open()
    sink.submit(ev("start"))
    assert sink.close() == 0
    lines = driver.made[0]
    assert lines.log[1][1:] == (17, False) and lines.log[1][0] - lines.log[0][0] >= 0.05


def test_level_mode_follows_start_and_end_and_ignores_labels_without_a_line(driver):
    sink = create_sink(cfg(mode="level"), "gpio")
    sink.open()
    lines = driver.made[0]
    steps = [(ev("start"), {17: True, 27: False}), (ev("start", camera="yard"), {17: True, 27: False}),
             (ev("start", "no_line"), {17: True, 27: False}), (ev("end"), {17: True, 27: False}),
             (ev("start", "zoom_in"), {17: True, 27: True}), (ev("end", camera="yard"), {17: False, 27: True})]
    for n, (e, want) in enumerate(steps, 1):
        sink.submit(e)
        assert sink.wait_for(lambda st, n=n: st["delivered"] == n, 5)
        assert lines.state == want, (n, e)
    assert sink.close() == 0                                     # 27 still held: inactive before release
    assert lines.changes()[-3:] == [(17, False), (27, False), ("close",)]
    assert lines.state == {17: False, 27: False}
    assert sink.stats().items() >= {"delivered": 6, "dropped": 0, "pending": 0, "errors": 0, "crashes": 0,
                                      "state": "closed"}.items()


def test_a_failing_line_is_reopened_and_the_event_delivered(driver):
    sink = create_sink(cfg(mode="level", reconnect=FAST), "gpio")
    sink.open()
    driver.made[0].fail = OSError(5, "Input/output error")       # e.g. a USB GPIO expander unplugged
    driver.fail_next = [SinkError("sink gpio: chip /dev/gpiochip0: no such device")]  # first reopen fails
    sink.submit(ev("start"))
    assert sink.wait_for(lambda st: st["delivered"] == 1, 5), sink.stats()
    assert len(driver.made) == 2 and driver.made[0].closed
    assert driver.made[1].state == {17: True, 27: False}
    assert sink.close() == 0 and sink.stats()["errors"] >= 1


def test_a_crash_of_the_pulse_timer_is_counted_and_the_lines_reopened(driver, caplog):
    sink = create_sink(cfg(pulse_ms=20, reconnect=FAST), "gpio")
    real, crashed = sink._plan.expire, []

    def broken(now: float) -> list[int]:
        if not crashed:
            crashed.append(now)
            raise RuntimeError("injected bug")
        return real(now)
    sink._plan.expire = broken  # type: ignore[method-assign]
    sink.open()
    sink.submit(ev("start"))
    assert sink.wait_for(lambda st: st["crashes"] == 1, 5), sink.stats()
    sink.submit(ev("start", "zoom_in"))                         # the timer is gone: the lines are reopened
    assert sink.wait_for(lambda st: st["delivered"] == 2 and st["state"] == "open", 5), sink.stats()
    lines = driver.made[-1]
    assert len(driver.made) == 2 and driver.made[0].closed
    assert lines.wait_for(lambda f: (27, False) in f.changes())  # the new timer ends the new pulse
    assert sink.close() == 0
    assert "pulse timer thread crashed (RuntimeError: injected bug)" in caplog.text


def test_open_error_is_a_one_line_sink_error_and_nothing_runs(driver):
    driver.fail_next = [SinkError("sink gpio: chip /dev/gpiochip0: no such device (GPIO chips here: none)")]
    sink = create_sink(cfg(), "gpio")
    with pytest.raises(SinkError, match="no such device"):
        sink.open()
    assert sink.stats()["state"] == "closed" and sink._timer is None


# --- the real gpiod adapter --------------------------------------------------------------------------
def test_gpiod_missing_chip_is_one_line_naming_the_chips_here(tmp_path):
    pytest.importorskip("gpiod")
    chip = "/dev/gpiochip0" if not os.path.exists("/dev/gpiochip0") else str(tmp_path / "gpiochip9")
    sink = create_sink(cfg(chip=chip), "gpio")
    with pytest.raises(SinkError) as e:
        sink.open()
    here = ", ".join(sorted(str(p) for p in Path("/dev").glob("gpiochip*"))) or "none"
    assert str(e.value) == f"sink gpio: chip {chip}: no such device (GPIO chips here: {here})"
    assert e.value.exit_code == EX_UNAVAILABLE


def test_gpiod_not_a_chip():
    pytest.importorskip("gpiod")
    with pytest.raises(SinkError, match=r"^sink gpio: chip /dev/null: not a GPIO chip \(GPIO chips here: "):
        create_sink(cfg(chip="/dev/null"), "gpio").open()


def test_gpiod_package_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(SinkError, match=r"^sink gpio: chip /dev/gpiochip0: driver gpiod needs the gpiod package: "
                                        r"pip install 'edge-tsm\[gpio\]'"):
        create_sink(cfg(), "gpio").open()


def fake_chip_sink(monkeypatch, fake: FakeChip, **kw):
    monkeypatch.setitem(gpio.DRIVERS, "gpiod", functools.partial(open_gpiod, chip_factory=fake))
    return create_sink(cfg(**kw), "gpio")


@pytest.mark.parametrize("active_low", [False, True])
def test_gpiod_requests_outputs_inactive_drives_and_releases(monkeypatch, active_low):
    gpiod = pytest.importorskip("gpiod")
    from gpiod.line import Direction, Value
    chip = FakeChip()
    sink = fake_chip_sink(monkeypatch, chip, chip="gpiochip0", mode="level", active_low=active_low)
    sink.open()
    assert chip.path == "/dev/gpiochip0"
    (_, path), (_, offsets, settings, consumer), closed = chip.calls[:3]
    assert offsets == (17, 27) and consumer == "edge-tsm" and closed == ("close",)  # chip closed, request kept
    assert isinstance(settings, gpiod.LineSettings)
    assert (settings.direction, settings.output_value, settings.active_low) == \
        (Direction.OUTPUT, Value.INACTIVE, active_low)
    sink.submit(ev("start"))
    sink.submit(ev("end"))
    assert sink.close() == 0
    assert chip.calls[3:] == [("set_value", 17, Value.ACTIVE), ("set_value", 17, Value.INACTIVE),
                              ("set_value", 17, Value.INACTIVE), ("set_value", 27, Value.INACTIVE), ("release",)]


@pytest.mark.parametrize("chip, want", [
    (FakeChip(num_lines=20), "line 27 (zoom_in) does not exist: gpiochip0 [fake-gpio] has 20 lines, 0-19"),
    (FakeChip(busy={17: "gpio-leds"}), "line busy: used line 17 (swipe_left) by 'gpio-leds'"),
    (FakeChip(open_error=PermissionError(13, "Permission denied")), "permission denied (add the service user to "
                                                                    "the gpio group"),
])
def test_gpiod_line_errors_are_one_line(monkeypatch, chip, want):
    pytest.importorskip("gpiod")
    with pytest.raises(SinkError) as e:
        fake_chip_sink(monkeypatch, chip).open()
    assert str(e.value).startswith(f"sink gpio: chip /dev/gpiochip0: {want}") and "\n" not in str(e.value)
    assert chip.calls[-1:] in ([], [("close",)])                    # never left open


# --- the Jetson.GPIO adapter -------------------------------------------------------------------------
def test_jetson_real_import_fails_here_with_what_to_do():
    if "Jetson" in sys.modules or detect_driver() == "jetson":
        pytest.skip("this is a Jetson")
    with pytest.raises(SinkError, match=r"^sink gpio: Jetson pins \(board numbering\): driver jetson needs "
                                        r"Jetson.GPIO .*elsewhere use driver: gpiod"):
        create_sink(cfg(driver="jetson"), "gpio").open()


def test_jetson_package_that_raises_on_import_off_a_jetson(monkeypatch, tmp_path):
    pkg = tmp_path / "Jetson" / "GPIO"
    pkg.mkdir(parents=True)
    (tmp_path / "Jetson" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("raise RuntimeError('Could not determine Jetson model')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("Jetson", "Jetson.GPIO"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SinkError, match="Jetson.GPIO cannot run here .Could not determine Jetson model.; off a "
                                        "Jetson use driver: gpiod"):
        create_sink(cfg(driver="jetson"), "gpio").open()


def install_fake_jetson(monkeypatch, pins: set[int]) -> types.ModuleType:
    mod = fake_jetson_gpio(pins)
    parent = types.ModuleType("Jetson")
    parent.GPIO = mod
    monkeypatch.setitem(sys.modules, "Jetson", parent)
    monkeypatch.setitem(sys.modules, "Jetson.GPIO", mod)
    return mod


@pytest.mark.parametrize("numbering", ["board", "bcm"])
def test_jetson_sets_up_pins_inverts_active_low_and_cleans_up(monkeypatch, numbering):
    g = install_fake_jetson(monkeypatch, {17, 27})
    sink = create_sink(cfg(driver="jetson", numbering=numbering, mode="level", active_low=True), "gpio")
    sink.open()
    sink.submit(ev("start"))
    assert sink.close() == 0
    mode = g.BOARD if numbering == "board" else g.BCM
    assert g.calls == [("setmode", mode), ("setup", 17, g.OUT, g.HIGH), ("setup", 27, g.OUT, g.HIGH),
                       ("output", 17, g.LOW), ("output", 17, g.HIGH), ("output", 27, g.HIGH),
                       ("cleanup", [17, 27])]


def test_jetson_bad_pin_and_clashing_numbering(monkeypatch):
    g = install_fake_jetson(monkeypatch, {17})
    with pytest.raises(SinkError, match=r"pin 27 \(zoom_in\) is not a usable GPIO pin in board numbering"):
        create_sink(cfg(driver="jetson"), "gpio").open()
    assert g.calls[-1] == ("cleanup", [17])                       # the pin already set up is given back
    g.mode = g.BCM
    with pytest.raises(SinkError, match="already set to other pin numbering"):
        create_sink(cfg(driver="jetson", lines={"a": 17}), "gpio").open()


# --- driver choice and config ------------------------------------------------------------------------
def test_auto_driver_detects_a_jetson(tmp_path):
    assert detect_driver(tmp_path) == "gpiod"
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234\0")
    assert detect_driver(tmp_path) == "jetson"
    (dt / "compatible").write_bytes(b"intel,nuc\0")
    assert detect_driver(tmp_path) == "gpiod"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    assert detect_driver(tmp_path) == "jetson"


@pytest.mark.parametrize("sink, want", [
    ({"lines": {}}, "sinks[0].lines: expected at least 1 item(s)"),
    ({"lines": {"swipe_left": -1}}, "sinks[0].lines.swipe_left: expected a number >= 0, got -1"),
    ({"lines": {"swipe_left": "17"}}, "sinks[0].lines.swipe_left: expected an integer, got '17'"),
    ({"lines": {3: 17}}, "expected a string, got 3"),
    ({"lines": {"a": 1}, "mode": "level", "events": ["start"]}, "mode 'level' needs 'end' in events"),
    ({"lines": {"a": 1}, "mode": "blink"}, "sinks[0].mode: expected 'pulse' or 'level', got 'blink'"),
    ({"lines": {"a": 1}, "pulse_ms": 0}, "sinks[0].pulse_ms: expected a number >= 1, got 0"),
    ({"lines": {"a": 1}, "pin": 3}, "sinks[0].pin: unknown key (allowed: "),
])
def test_config_errors_name_the_key(sink, want):
    with pytest.raises(ConfigError) as e:
        config_from_data({"cameras": [{"name": "door", "source": "synthetic"}], "sinks": [{"type": "gpio", **sink}]})
    assert want in str(e.value)


def test_config_defaults_and_sink_name():
    c = config_from_data({"cameras": [{"name": "door", "source": 0}],
                          "sinks": [{"type": "gpio", "lines": {"swipe_left": 17}}]}).sinks[0]
    assert (c.chip, c.mode, c.pulse_ms, c.active_low, c.driver, c.numbering) == \
        ("/dev/gpiochip0", "pulse", 100, False, "auto", "board")
