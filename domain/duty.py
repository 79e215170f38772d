"""Who is on duty at a counter (sign-on and sign-off at the operator console): an operator
designated for the device (Art. 5(2)) says they are the one operating it now."""

from __future__ import annotations

from domain.times import now_iso


def on_duty(ctx) -> list:
    return ctx.db.all("SELECT d.id, d.user_id, u.display_name, d.signed_on_at FROM duty d JOIN users u"
                      " ON u.id = d.user_id WHERE d.device = ? AND d.signed_off_at IS NULL ORDER BY d.id",
                      (ctx.device,))


def sign(ctx, on: bool) -> None:
    """Sign the acting operator on (once) or off at this counter."""
    db, device = ctx.db, ctx.device
    if on:
        if not db.one("SELECT 1 FROM duty WHERE device = ? AND user_id = ? AND signed_off_at IS NULL",
                      (device, ctx.actor.id)):
            with db.transaction():  # logged once written, before the commit
                db.execute("INSERT INTO duty (device, user_id, signed_on_at) VALUES (?, ?, ?)",
                           (device, ctx.actor.id, now_iso()))
                ctx.log("duty.sign_on", subject=device)
    else:
        with db.transaction():
            db.execute("UPDATE duty SET signed_off_at = ? WHERE device = ? AND user_id = ? AND signed_off_at IS NULL",
                       (now_iso(), device, ctx.actor.id))
            ctx.log("duty.sign_off", subject=device)


def describe(ctx) -> list[dict]:
    return [{"user_id": d["user_id"], "name": d["display_name"], "since": d["signed_on_at"]} for d in on_duty(ctx)]
