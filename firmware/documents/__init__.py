"""Printable documents the regulation asks for: the shared Japanese PDF set-up (``pdf``),
the counter sign and public notice (Art. 4, ``signage``) and the annual operations
report (Art. 14, ``report``). They read the device's settings and data; they change nothing.
"""
