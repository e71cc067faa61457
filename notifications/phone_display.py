"""Phone numbers as patients dial them: the clinic's number in its country's national format.

Numbers are stored in E.164 ("+493012345678") and stay so; only what patients read changes
("030 12345678", "(212) 555-0177"). The country is the department's (its holiday country),
else the number's own; a number from another country is shown in international format, and
anything that does not parse is shown exactly as stored.
"""

from __future__ import annotations

import phonenumbers


def national_phone(number: str | None, region: str | None = None) -> str | None:
    """``number`` formatted for a caller in ``region`` (ISO 3166 code); None stays None."""
    parsed = _parsed(number, region)
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        return number
    own_region = phonenumbers.region_code_for_number(parsed)
    if region and own_region and own_region != region.upper():
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def dial_string(number: str | None, region: str | None = None) -> str | None:
    """``number`` for a ``tel:`` link: E.164 when it parses, else as stored."""
    parsed = _parsed(number, region)
    if parsed is None:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _parsed(number: str | None, region: str | None) -> phonenumbers.PhoneNumber | None:
    """The number read as dialled in ``region``; None when empty or not a phone number."""
    if not number:
        return None
    try:
        return phonenumbers.parse(number, (region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
