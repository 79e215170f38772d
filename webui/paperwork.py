"""The registers' JSON API that a device and the city hub share (Art. 7–12): the sections, the
viewing requests, the provision and disclosure registers, and the pages' actions on them. Each
site's API blueprint takes these (``install``) and registers ``ACTIONS`` as its own, so the two
cannot drift; the workflows are ``domain``'s. The views here are not a blueprint of their own."""

from __future__ import annotations

from flask import Blueprint, jsonify

from domain import disclosures, people, provisions, requests
from webui import exports
from webui.permissions import MANAGER, SECTION_HEAD, permission
from webui.services import context


@permission(MANAGER, SECTION_HEAD)
def sections():
    """The sections (課)."""
    return jsonify([{"id": r["id"], "name": r["name"]} for r in people.sections(context().db)])


@permission(MANAGER, SECTION_HEAD)
def requests_list():
    """Viewing requests one may see: all (a manager), or one's own and one's section's."""
    columns = ("id", "number", "status", "purpose", "responsible_section", "created_at", "recording_ids")
    return jsonify([{c: r[c] for c in columns} for r in requests.visible(context())])


@permission(MANAGER, SECTION_HEAD)
def request_detail(request_id: int):
    """One viewing request with its opinions, decision and open viewing."""
    ctx = context()
    return jsonify(requests.describe(ctx, requests.seen(ctx, request_id)))


@permission(MANAGER)
def provisions_list():
    """The provision register, open records first."""
    ctx = context()
    return jsonify([provisions.describe(ctx, p, exports.job_status) for p in provisions.register(ctx.db)])


@permission(MANAGER)
def provision_detail(provision_id: int):
    """One provision record with its exports and running export jobs."""
    ctx = context()
    return jsonify(provisions.describe(ctx, provisions.load(ctx, provision_id), exports.job_status))


@permission(MANAGER)
def disclosures_list():
    """The disclosure register (Art. 12), open records first, with deadlines and days remaining."""
    ctx = context()
    return jsonify([disclosures.describe(ctx, d, exports.job_status) for d in disclosures.register(ctx.db)])


@permission(MANAGER)
def disclosure_detail(disclosure_id: int):
    """One disclosure request with its deadline, decision, handover exports and running export jobs."""
    ctx = context()
    return jsonify(disclosures.describe(ctx, disclosures.load(ctx, disclosure_id), exports.job_status))


READERS = [("/sections", sections), ("/requests", requests_list), ("/requests/<int:request_id>", request_detail),
           ("/provisions", provisions_list), ("/provisions/<int:provision_id>", provision_detail),
           ("/disclosures", disclosures_list), ("/disclosures/<int:disclosure_id>", disclosure_detail)]

# (rule, method, the page's endpoint): each site's API registers these as its own operations
ACTIONS = [
    ("/requests", "POST", "requests.new"),
    ("/requests/<int:request_id>/opinion", "POST", "requests.opinion"),
    ("/requests/<int:request_id>/decision", "POST", "requests.decide"),
    ("/requests/<int:request_id>/close", "POST", "requests.close"),
    ("/requests/<int:request_id>/scan", "POST", "requests.attach_scan"),
    ("/requests/<int:request_id>/scan", "GET", "requests.scan"),
    ("/requests/<int:request_id>/form.pdf", "GET", "requests.form_pdf"),
    ("/requests/<int:request_id>/unlock", "POST", "viewing.unlock"),
    ("/viewings/<viewing_id>", "GET", "viewing.manifest"),
    ("/viewings/<viewing_id>/part/<int:n>.mp4", "GET", "viewing.part"),
    ("/viewings/<viewing_id>/close", "POST", "viewing.close"),
    ("/provisions", "POST", "provisions.new"),
    ("/provisions/<int:provision_id>/paperwork", "POST", "provisions.paperwork"),
    ("/provisions/<int:provision_id>/scan", "POST", "provisions.attach_scan"),
    ("/provisions/<int:provision_id>/scan", "GET", "provisions.scan"),
    ("/provisions/<int:provision_id>/return", "POST", "provisions.return_or_erasure"),
    ("/provisions/<int:provision_id>/close", "POST", "provisions.close"),
    ("/provisions/<int:provision_id>/export", "POST", "provisions.start_export"),
    ("/provisions/<int:provision_id>/export/<job_id>", "GET", "provisions.export_status"),
    ("/provisions/<int:provision_id>/export/<job_id>/package", "GET", "provisions.download"),
    ("/provisions/<int:provision_id>/export/<job_id>/package", "POST", "provisions.download"),
    ("/disclosures", "POST", "disclosures.new"),
    ("/disclosures/<int:disclosure_id>/extension", "POST", "disclosures.extend"),
    ("/disclosures/<int:disclosure_id>/decision", "POST", "disclosures.decide"),
    ("/disclosures/<int:disclosure_id>/close", "POST", "disclosures.close"),
    ("/disclosures/<int:disclosure_id>/export", "POST", "disclosures.start_export"),
    ("/disclosures/<int:disclosure_id>/export/<job_id>", "GET", "disclosures.export_status"),
    ("/disclosures/<int:disclosure_id>/export/<job_id>/package", "GET", "disclosures.download"),
    ("/disclosures/<int:disclosure_id>/export/<job_id>/package", "POST", "disclosures.download"),
]


def install(blueprint: Blueprint) -> None:
    """The registers' reading calls on a site's API ``blueprint``."""
    for rule, view in READERS:
        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=["GET"])
