"""Input rules shared by every path that writes a profile field."""

from __future__ import annotations

import unicodedata

from services.errors import BadUserInput

MAX_NAME_LENGTH = 100


def clean_name(field: str, value: str | None) -> str | None:
    """Trim a name; blank means cleared. Rejects over-long names and control characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_NAME_LENGTH:
        raise BadUserInput(f"{field} must be at most {MAX_NAME_LENGTH} characters", field=field)
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise BadUserInput(f"{field} must not contain control characters", field=field)
    return value


def normalize_phone(field: str, value: str | None) -> str | None:
    """E.164 (`+14155550100`), the only form Stripe and SMS providers agree on."""
    if value is None or not value.strip():
        return None
    import phonenumbers  # on first use: 0.8 MB a worker that most never need

    try:
        parsed = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise BadUserInput(
            f"{field} must be a valid phone number in international form, such as +14155550100",
            field=field,
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def split_full_name(name: str | None) -> tuple[str | None, str | None]:
    """`"Ada King Lovelace"` → (`"Ada"`, `"King Lovelace"`): first word, then the rest."""
    if not name or not name.strip():
        return None, None
    first, _, last = name.strip().partition(" ")
    return first, (last.strip() or None)
