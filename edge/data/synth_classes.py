"""The synthetic motion classes: their names, what each one shows, and the named sets ``--classes`` takes.

``CLASSES`` are the nine the embedded default model knows (generator 4 renders only these). Generator 5
adds ``EXTRA_CLASSES``: motions the default dataset leaves out, so that ``teach`` can be measured on
motions the base never saw, or a base can be trained on more of them. A label's index in
``ALL_CLASSES`` seeds its clips, so a class renders the same clips whichever set it is generated in.

Directions are as displayed (image x to the right, y down); left/right and up/down names swap under a
mirror as :func:`edge.data.dataset.flip_permutation` expects (``tilt_left`` <-> ``tilt_right``,
``swipe_up_left`` <-> ``swipe_up_right`` horizontally, ``swipe_up_left`` <-> ``swipe_down_left``
vertically); ``shake``, ``wave`` and ``approach_and_leave`` are their own mirror images.
"""
from __future__ import annotations

from collections.abc import Iterable

from edge.errors import DataError

CLASSES: tuple[str, ...] = (
    "no_motion", "swipe_left", "swipe_right", "swipe_up", "swipe_down",
    "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw",
)
EXTRA_CLASSES: tuple[str, ...] = (
    "swipe_up_left", "swipe_up_right", "swipe_down_left", "swipe_down_right",
    "shake", "wave", "approach_and_leave", "tilt_left", "tilt_right",
)
ALL_CLASSES: tuple[str, ...] = CLASSES + EXTRA_CLASSES
CLASS_SETS: dict[str, tuple[str, ...]] = {"default": CLASSES, "extra": EXTRA_CLASSES, "all": ALL_CLASSES}

DEFINITIONS: dict[str, str] = {
    "no_motion": "the object stays where it is (at most a small wobble that ends where it began), or no object",
    "swipe_left": "the object moves to the left, within 15 degrees of horizontal",
    "swipe_right": "the object moves to the right, within 15 degrees of horizontal",
    "swipe_up": "the object moves up, within 15 degrees of vertical",
    "swipe_down": "the object moves down, within 15 degrees of vertical",
    "zoom_in": "the object grows (comes closer) about a nearly fixed centre",
    "zoom_out": "the object shrinks (moves away) about a nearly fixed centre",
    "rotate_cw": "the object turns clockwise as displayed, in the image plane (generator 5: by 45 to 170 degrees; "
                 "4: 90 to 170)",
    "rotate_ccw": "the object turns counter-clockwise as displayed, in the image plane (generator 5: by 45 to 170 "
                  "degrees; 4: 90 to 170)",
    "swipe_up_left": "the object moves up and to the left, 30 to 60 degrees from horizontal",
    "swipe_up_right": "the object moves up and to the right, 30 to 60 degrees from horizontal",
    "swipe_down_left": "the object moves down and to the left, 30 to 60 degrees from horizontal",
    "swipe_down_right": "the object moves down and to the right, 30 to 60 degrees from horizontal",
    "shake": "the object goes left and right and back, 1.25 to 2.25 times, without turning",
    "wave": "the object swings side to side about a point below it (a hand waving from the wrist or elbow)",
    "approach_and_leave": "the object comes closer and goes back to about its first size",
    "tilt_left": "the object turns in depth about its vertical axis to face left: its right edge comes nearer "
                 "(grows) and its left edge recedes, with perspective; neither a rotation nor a zoom",
    "tilt_right": "the object turns in depth about its vertical axis to face right: its left edge comes nearer",
}


def resolve_classes(spec: str | Iterable[str] | None, *, generator: int = 5) -> tuple[str, ...]:
    """Class names from ``spec``: a comma-separated string or a list of class names and set names
    (``default``, ``extra``, ``all``), in the order given, each once. ``None`` is the default set.

    Raises:
        DataError: an unknown name, an empty list, or a class generator 4 cannot render.
    """
    if spec is None:
        return CLASSES
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        if item in CLASS_SETS:
            names = CLASS_SETS[item]
        elif item in ALL_CLASSES:
            names = (item,)
        else:
            raise DataError(f"synthetic class {item!r} is unknown (classes: {', '.join(ALL_CLASSES)}; "
                            f"sets: {', '.join(CLASS_SETS)})")
        out += [n for n in names if n not in out]
    if not out:
        raise DataError(f"synthetic classes {spec!r}: no class named (sets: {', '.join(CLASS_SETS)})")
    if generator < 5:
        extra = [n for n in out if n not in CLASSES]
        if extra:
            raise DataError(f"synthetic classes {', '.join(extra)}: generator {generator} renders only "
                            f"{', '.join(CLASSES)} (use generator 5)")
    return tuple(out)
