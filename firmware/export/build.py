"""Building an export package (Art. 9–11): the minimum-necessary clip of a recording, signed.

What leaves the device is one ZIP package (optionally sealed for transport with a
passphrase, in the age format)::

    <name>/clip.mp4          the approved time range and nothing more (fragmented MP4)
    <name>/manifest.json     device, recording, the original segments' hashes, the exact
                             range and clock status, redactions, ground, recipient,
                             request, approver, export time, the other files' hashes
    <name>/manifest.sig      Ed25519 signature over manifest.json by the device key
    <name>/device-key.pem    the device's public key (and device.vkey, the same as a verifier key)
    <name>/cover.pdf         the cover sheet (Japanese): what this is, how to check it
    <name>/README.txt        the same check with standard tools, step by step
    <name>/audit-proof.json  the device's audit-log entry for this export, with a signed
                             checkpoint and a Merkle inclusion proof

Cutting keeps to the range: without re-encoding the picture starts on the first keyframe
at or after the start (never earlier: nothing before the range leaves) and ends before
the end. ``exact=True`` re-encodes the picture so that it starts on the start itself, and
blurring re-encodes it too. The sound is always re-encoded, cut to the sample: every
segment's AAC ends in a frame padded past the segment's end, and copying those frames
would put the sound later by that padding at every segment boundary (about 160 ms a
minute at 4-s segments of 48 kHz sound) — re-encoding it is cheap, a drifting sound is not.

Footage is decrypted one segment at a time, in memory, and goes straight into the
package; nothing decrypted is written anywhere else. The export is logged (with the
manifest's hash) before the package is complete, so no package exists that the log does
not show.
"""


from __future__ import annotations

import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Callable

from firmware.export import cover
from firmware.export.cutter import Cutter, frame_s, plaintexts, range_sound
from firmware.export.errors import ExportRefused
from firmware.export.manifest import Manifest, iso, key_fingerprint, package_name, pem
from firmware.export.plan import Plan
from firmware.export.request import Provision, Redactions, article_9, basis_ja, ground_name, wording_ja

_US = 1_000_000


@dataclass
class Result:
    name: str
    manifest: dict
    manifest_sha256: str
    audit_seq: int | None


def build(vault, plan_: Plan, *, opener, provision: Provision, out: BinaryIO, log_export: Callable[[dict], int],
          redactions: Redactions | None = None, exact: bool = False, transport_passphrase: str | None = None,
          progress: Callable[[float, float], None] | None = None, proof: Callable[[int], dict] | None = None,
          work_factor: int = 18) -> Result:
    """Write the package to ``out`` (a file opened for writing).

    ``opener`` opens the day keys (a manager's identity or the recovery key).
    ``log_export(entry) -> seq`` appends the export to the audit log and returns the
    entry's number; ``proof(seq)`` returns its inclusion proof with a signed checkpoint.
    With ``transport_passphrase`` the whole ZIP is sealed in the age passphrase format.
    """
    from firmware.vault import age

    redactions = redactions or Redactions()
    plan_.check(redactions)
    provision.ground = ground_name(provision.ground)  # "3" and "investigation" alike
    now = time.time()
    device = plan_.recording["device"]
    name = package_name(device, plan_.recording["id"], now)
    writer = None
    target = out
    if transport_passphrase is not None:
        writer = age.Writer(out, [age.Passphrase(transport_passphrase, work_factor=work_factor)])
        target = writer
    # the cover sheet's printer makes its slow start while the clip is cut
    with cover.Printer() as printer, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED,
                                                      allowZip64=True) as zf:
        # 1. the clip, decrypted one segment at a time into the package
        clip_info = zipfile.ZipInfo(f"{name}/clip.mp4", date_time=time.localtime(now)[:6])
        with zf.open(clip_info, "w", force_zip64=True) as entry:
            cutter = Cutter(plan_, entry, redactions, exact, progress, range_sound(vault, plan_, opener))
            segments = []
            try:
                for seg, data, digest in plaintexts(vault, plan_.segments, opener):
                    segments.append({"seq": seg.seq, "path": seg.path, "sealed_sha256": seg.sha256,
                                     "plaintext_sha256": digest, "start": seg.started_at, "end": seg.ended_at,
                                     "clock_synchronised": seg.clock_synchronised, "boot_id": seg.boot_id})
                    cutter.segment(seg, data)
                    del data
                cutter.close()
            except BaseException:
                cutter.abandon()
                raise
            for s in segments:
                s["plaintext_sha256"] = s["plaintext_sha256"].result()
        if cutter.begin is None:
            raise ExportRefused("no keyframe lies inside the range, so no picture can be shown without showing "
                                "more than approved — widen the range, or ask for an exact (re-encoded) cut")
        clip_start, clip_end = cutter.begin, cutter.last_t + frame_s(plan_)
        clip_end = min(clip_end, plan_.end_s)
        public = vault.keys.public_key()
        fingerprint = key_fingerprint(public)
        manifest = Manifest(
            device={"id": device, "key_sha256": fingerprint, "log": vault.keys.signer_name},
            recording={"id": plan_.recording["id"], "started_at": plan_.recording["started_at"],
                       "mode": plan_.recording["mode"], "section": plan_.recording.get("section", "")},
            approved_range={"start_s": round(plan_.start_s, 3), "end_s": round(plan_.end_s, 3),
                            "start": iso(plan_.wall(plan_.start_s)), "end": iso(plan_.wall(plan_.end_s))},
            clip={"file": "clip.mp4", "sha256": cutter.sink.sha256.hexdigest(), "bytes": cutter.sink.bytes,
                  "start_s": round(clip_start, 3), "end_s": round(clip_end, 3),
                  "duration_s": round(clip_end - clip_start, 3),
                  "start": iso(plan_.wall(clip_start)), "end": iso(plan_.wall(clip_end)),
                  "cut": ("sound only" if cutter.sound_only else
                          "re-encoded" if cutter.reencode_video else "keyframe (not re-encoded)"),
                  "audio": "re-encoded" if cutter.audio is not None else "none"},
            clock={"synchronised": all(s["clock_synchronised"] for s in segments),
                   "unsynchronised_segments": sum(not s["clock_synchronised"] for s in segments)},
            original_segments=segments,
            redactions={**redactions.describe(), "faces_found": cutter.faces_found},
            provision={"ground": provision.ground, "article_9": article_9(provision.ground),
                       "ground_ja": wording_ja(provision.ground), "basis_ja": basis_ja(provision.ground),
                       "recipient": provision.recipient,
                       "request_reference": provision.reference, "request_date": provision.request_date,
                       "number": provision.number, "approver": provision.approver,
                       "exporter": provision.exporter, "note": provision.note},
            exported_at=iso(round(now * _US)),
        )
        # 2. the cover sheet and the plain-text steps, covered by the signature too
        from firmware.vault.signed_note import make_vkey

        extras = {"README.txt": cover.readme(manifest.as_dict()).encode(), "cover.pdf": printer.sheet(manifest.as_dict()),
                  "device-key.pem": pem(public), "device.vkey": (make_vkey(vault.keys.signer_name, public) + "\n").encode()}
        manifest.files = {"clip.mp4": manifest.clip["sha256"],
                             **{n: hashlib.sha256(d).hexdigest() for n, d in extras.items()}}
        body = manifest.body()
        digest = hashlib.sha256(body).hexdigest()
        for n, d in extras.items():
            zf.writestr(f"{name}/{n}", d)
        zf.writestr(f"{name}/manifest.json", body)
        zf.writestr(f"{name}/manifest.sig", vault.keys.signing_key().sign(body))
        # 3. the log: the package is finished only once its export is recorded
        seq = log_export({"manifest_sha256": digest, "recording": plan_.recording["id"],
                          "range": [manifest.clip["start"], manifest.clip["end"]],
                          "ground": provision.ground, "recipient": provision.recipient[:200],
                          "reference": provision.reference[:200], "number": provision.number,
                          "redactions": bool(redactions.mute or redactions.blur or redactions.faces),
                          "sealed_for_transport": transport_passphrase is not None})
        if proof is not None and seq is not None:
            zf.writestr(f"{name}/audit-proof.json", json.dumps(proof(seq), ensure_ascii=False, indent=2) + "\n")
    if writer is not None:
        writer.close()
    if progress:
        progress(plan_.duration, plan_.duration)
    return Result(name, manifest.as_dict(), digest, seq)
