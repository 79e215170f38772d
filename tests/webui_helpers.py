"""Driving the web UI as people do: set the device up, add people, log in."""

from __future__ import annotations

import re

PASSWORDS = {
    "yamada": "manager passphrase 1",
    "sato": "operator passphrase 2",
    "suzuki": "section head passphrase 3",
    "takahashi": "other section head 4",
    "kimura": "the city's auditor 5",
}


def csrf(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def post(client, path: str, data: dict | None = None, **kw):
    data = dict(data or {})
    data.setdefault("csrf_token", csrf(client, kw.pop("token_from", "/login")))
    return client.post(path, data=data, **kw)


def setup_code(client) -> str:
    """The set-up code, as the device's console shows it to whoever stands at it."""
    from webui import setup_code as code

    return code.shown(code.pending(client.application.config["KIROKU_DATA"]))


def first_run(client, *, section: str = "資産経営課"):
    """The first manager, through the first-run page; leaves ``client`` logged in as them."""
    response = post(client, "/setup/", {"code": setup_code(client), "username": "yamada", "display_name": "山田 太郎",
                                        "section": section, "password": PASSWORDS["yamada"],
                                        "confirm": PASSWORDS["yamada"]},
                    token_from="/setup/")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def login(client, username: str):
    client.get("/login")
    response = post(client, "/login", {"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 302, f"{username} could not log in"
    return response


def logout(client):
    token = csrf(client, "/account")
    return client.post("/logout", data={"csrf_token": token})


def add_section(client, name: str):
    post(client, "/admin/sections", {"name": name}, token_from="/admin/people")


def section_id(app, name: str) -> int:
    from webui.db import connect

    conn = connect(app.config["KIROKU_DATA"])
    try:
        return conn.execute("SELECT id FROM sections WHERE name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


def add_person(client, app, username: str, display: str, section: str, roles: list[str]):
    response = post(client, "/admin/people",
                    {"username": username, "display_name": display, "section_id": str(section_id(app, section)),
                     "roles": roles, "password": PASSWORDS[username], "your_password": PASSWORDS["yamada"]},
                    token_from="/admin/people")
    assert response.status_code == 302, response.get_data(as_text=True)


def staff(client, app):
    """A manager, an operator, the 市民課 head and another section's head."""
    first_run(client)
    add_section(client, "市民課")
    add_section(client, "税務課")
    add_person(client, app, "sato", "佐藤 花子", "市民課", ["operator"])
    add_person(client, app, "suzuki", "鈴木 一郎", "市民課", ["section_head"])
    add_person(client, app, "takahashi", "高橋 次郎", "税務課", ["section_head"])
    logout(client)


class Api:
    """A script using the JSON API: it logs in through ``/api/v1/session`` and sends the
    CSRF token it was given with every write."""

    def __init__(self, client):
        self.client = client
        self.token = client.get("/api/v1/session").get_json()["csrf_token"]

    def login(self, username: str, password: str | None = None):
        response = self.post("/api/v1/session", {"username": username, "password": password or PASSWORDS[username]})
        if response.status_code == 200:
            self.token = response.get_json()["csrf_token"]
        return response

    def get(self, path: str):
        return self.client.get(path)

    def post(self, path: str, body=None, **kw):
        if "data" not in kw:
            kw["json"] = body if body is not None else {}
        return self.client.post(path, headers={"X-CSRFToken": self.token}, **kw)

    def delete(self, path: str):
        return self.client.delete(path, headers={"X-CSRFToken": self.token})
