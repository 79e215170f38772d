"""The vault: sealed segments, day keys, the index, retention and the audit log.

``Vault`` is the recorder's store; ``init`` is first-run set-up (``kiroku init``).
"""

from firmware.vault.check import Finding
from firmware.vault.errors import VaultError, VaultNotReady
from firmware.vault.vault import SealedSegment, Vault

__all__ = ["Finding", "SealedSegment", "Vault", "VaultError", "VaultNotReady"]
