"""What a running :class:`edge.pipeline.Pipeline` says about itself: health for the watchdog, the snapshot
behind status.json, ``edge-tsm status`` and Prometheus, the one-line status, and the devices it waits for.

A mixin, so these stay methods of the pipeline (``pipeline.snapshot()``) while the frame loop's module
keeps to the loop.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.sinks import Sink

WAITING = "waiting"   # the state of a device not there yet: waited for, the rest runs


class PipelineStatus:
    """Health and figures of a pipeline (see :mod:`edge.pipeline` for the attributes it reads)."""

    def healthy(self) -> tuple[bool, str]:
        """For the watchdog: is the pipeline making progress? (ok, why not). A device waited for is no fault."""
        now = time.monotonic()
        limit = self.cfg.engine.step_timeout_s
        if self.step_started and now - self.step_started > limit:
            return False, f"a frame step has been running for {now - self.step_started:.0f} s (engine hung?)"
        if self.heartbeat and now - self.heartbeat > limit + 1.0:
            return False, f"the inference loop has not run for {now - self.heartbeat:.0f} s"
        for s in self.streams:
            if s.camera.error is not None:
                return False, f"camera {s.name}: capture thread failed"
            stuck = 3 * s.camera.cfg.stall_s
            if s.camera.state == "stalled" and s.last_frame and now - s.last_frame > stuck:
                return False, f"camera {s.name}: no frame for {now - s.last_frame:.0f} s and no reconnect"
        return True, ""

    def engine_text(self) -> str:
        b = self.backend
        return f"{b.name} {b.device} {b.precision_note}" if b else "none"

    def sink_stats(self, sink: Sink) -> dict[str, Any]:
        """A sink's counters; state 'waiting' while a reload's handover still opens it in the background."""
        st = sink.stats()
        late = self._late_sinks
        if late is not None and sink.name in late.names():
            st["state"] = WAITING
        return st

    def waiting(self) -> list[str]:
        """The devices not there yet (``camera door``, ``sink serial``): waited for while the rest runs."""
        out = [f"camera {s.name}" for s in self.streams if s.camera.state == WAITING]
        return out + [f"sink {k.name}" for k in self.sinks if self.sink_stats(k).get("state") == WAITING]

    def snapshot(self) -> dict[str, Any]:
        """Everything ``edge-tsm status``, the status line and the Prometheus text show (:mod:`edge.metrics`)."""
        cams = {}
        for s in self.streams:
            st, f = s.camera.stats(), s.figures
            cams[s.name] = {"state": st.get("state"), "fps": st.get("fps", 0.0),
                            "frames_read": st.get("frames_read", 0), "classified": f.classified,
                            "skipped": st.get("skipped", 0), "reconnects": st.get("reconnects", 0),
                            "decode_scale": st.get("decode_scale", 1), "inference_ms": f.hist.snapshot(),
                            "inference_ms_p50": f.p50_ms(), "events": dict(f.by_label)}
        return {"model": self.bundle.name if self.bundle else self.cfg.model, "engine": self.engine_text(),
                "uptime_s": round(time.monotonic() - self.started, 1), "time": time.time(),
                "interval_s": self.cfg.metrics.interval_s, "cameras": cams,
                "sinks": {sink.name: self.sink_stats(sink) for sink in self.sinks},
                **({"clips": self.spool.stats()} if self.spool is not None else {}),
                "journal_last_seq": self.journal.last_seq}

    def status(self) -> str:
        """One line from :meth:`snapshot`: per camera state, fps, decisions, step ms, events; per sink backlog."""
        snap = self.snapshot()
        parts = [snap["engine"]]
        for name, c in snap["cameras"].items():
            parts.append(f"{name}: {c['state']} {c['fps']:.1f} fps, {c['classified']} classified "
                         f"({c['skipped']} stale skipped), {c['inference_ms_p50']:.1f} ms, "
                         f"{sum(c['events'].values())} events")
        for name, st in snap["sinks"].items():
            parts.append(f"sink {name}: {st.get('state')} {st.get('delivered', 0)} sent, "
                         f"{st.get('pending', 0)} pending, {st.get('dropped', 0)} dropped")
        return "; ".join(parts)
