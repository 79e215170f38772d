"""kiroku firmware: the recorder daemon and everything the device owns.

The web UI (``webui``) depends on this package, never the other way round.
"""

__version__ = "0.1.0"
