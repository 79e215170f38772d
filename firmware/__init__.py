"""kiroku firmware: the recorder daemon and everything the device owns.

The web UI (``webui``) and the command line (``kiroku``) depend on this package, never the
other way round (docs/architecture.md).
"""

__version__ = "0.1.0"
