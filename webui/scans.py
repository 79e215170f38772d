"""The scanned written requests, as every register's pages take and give them."""

from __future__ import annotations

from flask import send_file

from domain import scans
from webui.parsing import Form, Upload
from webui.services import context

SCAN = Form(Upload("scan", "multipart file: PDF, PNG or JPEG, at most 10 MB", limit=scans.MAX_SCAN))


def send(number: str, name: str | None, action: str):
    """A stored scan as a download, its reading logged (``action``)."""
    path = scans.opened(context(), number, name, action)
    return send_file(path, as_attachment=True, download_name=path.name)
