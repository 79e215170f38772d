"""Exports (Art. 9–12): the minimum-necessary clip of a recording, signed, for whoever it
is provided or disclosed to — and checking such a package offline.

    request   what is asked: the ground (or the Art. 12 basis), recipient, redactions
    plan      which segments and which part of them, resolved against the index
    cutter    decrypting in memory, cutting, redacting into one MP4
    redact    face detection and the mosaic
    manifest  manifest.json (the signed bytes) and what every package names
    cover     the cover sheet (PDF) and README.txt, for the recipient
    build     the package: all of the above, signed and logged
    verify    ``kiroku verify``: every check a recipient can make, offline

The names below are the package's interface; its modules import each other, never this one.
"""

from firmware.export.build import Result, build
from firmware.export.errors import CoverSheetFailed, ExportError, ExportRefused, PackageError
from firmware.export.manifest import key_fingerprint
from firmware.export.plan import Plan, plan
from firmware.export.request import Provision, Redactions, Region, ground_name, parse_span

__all__ = ["CoverSheetFailed", "ExportError", "ExportRefused", "PackageError", "Plan", "Provision", "Redactions",
           "Region", "Result", "build", "ground_name", "key_fingerprint", "parse_span", "plan"]
