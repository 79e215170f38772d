"""The vault: sealed segments, day keys, the index, retention and the audit log (issue 3)."""
