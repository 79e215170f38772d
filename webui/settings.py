"""The manager's device settings, kept in ``<data>/kiroku.toml`` (this process writes it,
the recorder reads it): mode, notice, segment length, retention within the rule's limits.

Every change is validated exactly as the file is at start-up (``firmware.config``), written
atomically, logged with what changed, and handed to the recorder, which applies at once
what it safely can (notice delay, segment length, the on-demand time limit, retention)
and the rest (mode, announcement) when it next starts.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from flask import Blueprint, current_app, g, render_template, url_for

from firmware.config import Config, ConfigError, from_dict
from firmware.fsutil import atomic_write
from webui.actions import done, fields, refuse
from webui.parsing import Form, Text, takes
from webui.permissions import MANAGER, permission
from webui.queries import FIELDS, RESTART_NEEDED, current, describe
from webui.services import audit, control

bp = Blueprint("settings", __name__, url_prefix="/admin/settings")

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def dumps(config: Config) -> str:
    """The configuration as TOML, keeping only what differs from the defaults."""
    defaults = Config()
    lines = ["# Written by the admin page. Unlisted keys have their defaults (firmware/default-config.toml).\n"]
    for section in dataclasses.fields(Config):
        ours, theirs = getattr(config, section.name), getattr(defaults, section.name)
        changed = [(f.name, getattr(ours, f.name)) for f in dataclasses.fields(ours)
                   if getattr(ours, f.name) != getattr(theirs, f.name)]
        if changed:
            lines.append(f"\n[{section.name}]\n")
            lines += [f"{name} = {toml_value(value)}\n" for name, value in changed]
    return "".join(lines)


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("admin/settings.html", config=current(), fields=FIELDS)


def _path() -> Path:
    return Path(current_app.config["KIROKU_DATA"]) / "kiroku.toml"


# Every setting the page offers, each optional (what is not sent stays as it is); the view reads
# them by FIELDS, telling an absent one from an empty one.
SAVE = Form(*(Text(f"{section}.{key}", f"{section}.{key}", strip=False,
                   json_type={str: "string", int: "integer", float: "number"}[kind]) for section, key, kind in FIELDS))


@bp.post("/")
@permission(MANAGER)
@takes(SAVE)
def save():
    """Change settings (any of FIELDS, as "section.key"); what is not sent stays as it is."""
    old = current()
    inputs = fields()
    changes: dict[str, dict] = {}
    try:
        for section, key, kind in FIELDS:
            raw = inputs.get(f"{section}.{key}")
            if raw is None:
                continue
            raw = raw.strip()
            value = kind(raw) if kind is not str else raw
            if value != getattr(getattr(old, section), key):
                changes.setdefault(section, {})[key] = value
        new = old.replace(**changes)
    except (ValueError, ConfigError) as exc:
        problem = str(exc)
        refuse("settings.invalid", page=lambda: render_template("admin/settings.html", config=old, fields=FIELDS,
                                                                 problem=problem), detail=problem)
    restart = {(s, k) for s, values in changes.items() for k in values} & RESTART_NEEDED
    if changes:
        text = dumps(new)
        assert from_dict(tomllib.loads(text)) == new  # what is written reads back as what was meant
        audit("settings.change",
                   detail={f"{s}.{k}": v for s, values in changes.items() for k, v in values.items()})
        atomic_write(_path(), text.encode())
        control().request("reload", by=g.user.username)
    return done(url_for("settings.index"), notice=("settings.saved_restart" if restart else "settings.saved")
                if changes else None, restart_needed=sorted(f"{s}.{k}" for s, k in restart), **describe(current()))


@bp.get("/notice")
@permission(MANAGER)
def notice():
    """The sign for the counter and the public notice (Art. 4), made from these settings."""
    from firmware.documents import signage

    config = current()
    return render_template("admin/notice.html", systems=signage.systems(config), config=config,
                           title=signage.TITLE, intro=signage.intro(config), closing=signage.CLOSING,
                           manager=signage.manager_line(config))


@bp.get("/notice/<name>")
@permission(MANAGER)
def notice_file(name: str):
    """One of them: sign-a4.pdf, sign-a3.pdf, notice.pdf, notice.html."""
    import io

    from flask import abort, send_file

    from firmware.documents import signage

    if name not in signage.FILES:
        abort(404)
    data = signage.FILES[name](current())
    mimetype = "text/html" if name.endswith(".html") else "application/pdf"
    return send_file(io.BytesIO(data), mimetype=mimetype, as_attachment=True, download_name=name)
