"""UUIDv7 primary keys generated in Python (RFC 9562, time-ordered).

Python 3.11 has no uuid.uuid7. Within one millisecond the 12-bit `rand_a` field is
used as a counter (RFC 9562 method 3) so ids made by one process sort in the order
they were made; the database default `uuidv7()` covers raw SQL and COPY inserts.
"""

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The Unix time in milliseconds encoded in a UUIDv7."""
    return value.int >> 80


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest uuid whose UUIDv7 time is `moment` (to the millisecond): every id made
    at or after it sorts at or above it, every id made before sorts below."""
    ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    return uuid.UUID(int=(ms & ((1 << 48) - 1)) << 80)


def uuid7_at(moment: datetime, random_bits: int | None = None) -> uuid.UUID:
    """A UUIDv7 made at `moment` (history loaded or tested as if made then).

    `random_bits` (74 bits, e.g. from a seeded random.Random) makes it deterministic.
    """
    if random_bits is None:
        random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (random_bits >> 62) & 0xFFF, random_bits & ((1 << 62) - 1)
    return uuid.UUID(int=uuid7_floor(moment).int | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
