"""The storage page: capacity, the retention the card can hold per record class against the
minimum (a chart), holds, the last overwrite."""

from __future__ import annotations

from flask import Blueprint, render_template

from webui.permissions import MANAGER, permission
from webui.queries import vault_status

bp = Blueprint("storage", __name__, url_prefix="/admin/storage")


@bp.get("/")
@permission(MANAGER)
def index():
    return render_template("admin/storage.html", st=vault_status())
