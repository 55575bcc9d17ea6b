"""The systemd unit, its drop-ins and the udev rule (package data of ``edge.systemd``)."""
