"""The hub's background work beside its web UI: the consumer (what devices publish, into the
database) and the pusher (what devices must be told). ``kiroku hub`` runs both in the process
that serves the pages. Web workers keep no state and may be many; the consumer is one per
city: a second with the same client id takes the broker session over (the broker disconnects
the first), so two never write at once."""

from __future__ import annotations

from hub import locker
from hub.consumer import Consumer
from hub.pushes import Pusher


def start(app, *, client_id: str = "kiroku-hub") -> tuple[Consumer, Pusher]:
    """Start the consumer and the pusher for the hub ``app`` (``hub.web.create_app``), and the
    evidence locker's keeper when the configuration names a store."""
    site = app.extensions["kiroku"]
    b = site.config.broker
    password = site.config.secret(b.hub_password_file, "broker.hub_password_file")
    site.admin().ensure_hub_account(password)
    consumer = Consumer(site.dsn, b.host, b.port, password, b.ca, client_id=client_id).start()
    site.pusher = Pusher(site.dsn, b.host, b.port, password, b.ca, client_id=f"{client_id}-push").start()
    site.keeper = None
    bucket = site.bucket()
    if bucket is not None:
        site.keeper = locker.Keeper(site.dsn, bucket, lambda action, **kw: site.audit.record("hub", action, **kw),
                                    lifetime=site.config.locker.url_lifetime, pusher=site.pusher).start()
    return consumer, site.pusher


def stop(consumer: Consumer, pusher: Pusher, keeper=None) -> None:
    if keeper is not None:
        keeper.close()
    pusher.close()
    consumer.close()
