"""kiroku: the command line and the process wiring, above everything else.

``kiroku.cli`` is the ``kiroku`` command; ``kiroku.supervisor`` runs the recorder and the web
UI together (``kiroku run``); ``kiroku.bench`` measures each stage. Nothing below (``webui``,
``firmware``) imports this package.
"""
