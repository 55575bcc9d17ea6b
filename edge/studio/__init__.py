"""``edge-tsm studio``: a local web app over the folders the project writes (issue 18).

Review the daemon's field clips, label clips and recording segments with the keyboard, see the model's
per-frame scores under the video, teach a new bundle and evaluate events, watch a live camera and tune
the ``events:`` thresholds. The server (Starlette on uvicorn, the ``studio`` extra) is in
:mod:`edge.studio.app`; its HTTP API is ``edge/studio/API.md``; the page is ``edge/studio/static/``.
Nothing here is imported by the runtime.
"""
