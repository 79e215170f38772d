"""The vault: sealed segments, day keys, the index, retention and the audit log.

``Vault`` is the recorder's store; ``init`` is first-run set-up (``kiroku init``).
"""

from firmware.vault.errors import VaultError, VaultNotReady
from firmware.vault.vault import Finding, SealedSegment, Vault

__all__ = ["Finding", "SealedSegment", "Vault", "VaultError", "VaultNotReady"]
