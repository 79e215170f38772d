"""The virtual counter: the record button, the sign and the status light, in a browser.

Shown on simulated hardware only. The button does not call the recorder directly: it
asks the recorder to drive the button's (mock) GPIO pin low and high again, so the press
goes through the same debouncing, long-press timing and state machine as a finger on
the real button.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from firmware.hardware import Simulator
from webui import i18n
from webui.permissions import PUBLIC, permission

bp = Blueprint("counter", __name__)


@bp.get("/counter")
@permission(PUBLIC)
def index():
    return render_template(
        "counter/index.html",
        simulated=current_app.config["KIROKU_SIMULATED"],
        sim_actions=[a for a in Simulator.ACTIONS if a not in ("press", "release")],
        messages=i18n.catalog(),
    )
