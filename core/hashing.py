"""Content hashes: the one definition of how the project hashes text and bytes."""

import hashlib

# What every *sha256 column holds: a lowercase hex SHA-256 (CHECK constraints use it).
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"


def sha256_hex(content: str | bytes) -> str:
    """Hex SHA-256 of bytes, or of a text's UTF-8 bytes (as core.expressions.Sha256Hex)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()
