"""The recording picker of the request, provision and disclosure forms, on a device and at the
hub: what the filter form asks (``wanted``) and the recordings it leaves
(``domain.requests.pick``). Not a blueprint: the three forms' views share it."""

from __future__ import annotations

from domain import requests


def wanted(args) -> dict:
    """The picker's filters from a page's query string: a place, a local day, calls by number
    (typed any way), only marked recordings."""
    return {"place": args.get("place", "")[:80], "day": args.get("day", "")[:10],
            "number": args.get("number", "")[:40], "marked": args.get("marked") == "1"}


def recordings(ctx, wanted: dict) -> list:
    return requests.pick(ctx, **wanted)
