"""Text from outside (API bodies, import files, search queries, frames) checked before it reaches the database.

PostgreSQL's text columns cannot hold U+0000: psycopg refuses such a string with a ValueError, which was a 500 on
every entry point that stored or searched it. SQLite stores it, but a NUL is never meaningful in a chat, so both
databases refuse it the same way. Every entry point calls ``refuse_nul`` and turns ``NulCharacter`` into its own
clear error (a 400 naming the field, or a ``bad_frame``).
"""

from __future__ import annotations

from django.utils.translation import gettext

NUL = "\x00"


class NulCharacter(ValueError):
    def __init__(self, field: str):
        self.field = field
        super().__init__(
            gettext("“%(field)s” contains a NUL character (U+0000), which cannot be stored. Remove it and try again.")
            % {"field": field}
        )


def refuse_nul(value: str, field: str) -> str:
    """``value`` unchanged, or ``NulCharacter`` naming ``field``."""
    if NUL in value:
        raise NulCharacter(field)
    return value
