"""The storage page: capacity, the retention the card can hold per record class against the
minimum (a chart), holds, the last overwrite."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, render_template

from webui.permissions import MANAGER, permission

bp = Blueprint("storage", __name__, url_prefix="/admin/storage")


def vault_status() -> dict:
    from firmware.config import load
    from firmware.paths import config_file
    from firmware.vault import Vault

    data = Path(current_app.config["KIROKU_DATA"])
    config = load(config_file(data, None))
    vault = Vault.open(data, config, readonly=True)
    try:
        status = vault.status(bitrate_guess=config.bytes_per_second, own_class=config.record_class)
        status["holds_open"] = vault.holds()
    finally:
        vault.close()
    return status


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("admin/storage.html", st=vault_status())
