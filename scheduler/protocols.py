"""The protocols a new department starts with (all editable afterwards).

Spacing and overall times follow published SBRT trials and public department protocols;
see the product brief. ``site`` selects the patient preparation instructions.
"""

from __future__ import annotations

from typing import Any

PREP_INSTRUCTIONS = {
    "liver": (
        "Eat nothing for about 2 hours before each session, but do not fast for longer. "
        "Arrive 20 minutes early and bring a list of your medicines."
    ),
    "lung": (
        "Take your regular medicines as usual and bring them with you. Wear comfortable "
        "clothes; the team will practise the breathing instructions with you. "
        "Arrive 20 minutes early."
    ),
    "prostate": (
        "Empty your bladder, then drink 350 to 500 ml of water and wait about 30 minutes "
        "before your session so your bladder is comfortably full. Arrive 30 minutes early."
    ),
    "spine": (
        "Take your pain medicine as prescribed before coming so that you can lie still. "
        "Arrive 20 minutes early."
    ),
    "oligomets": (
        "Follow the preparation your team gave you for the treated area. "
        "Arrive 20 minutes early and bring a list of your medicines."
    ),
    "generic": "Arrive 20 minutes early and bring a list of your medicines.",
}

# "Every other day" in clinic practice means every other treatment day: a strict 2/2 cannot
# cross a weekend with Monday-Friday treatment days (Mon, Wed, Fri, then Sunday), so the
# maximum gap allows a weekend (Thursday to Monday is 4 days). Overall time still binds.
EVERY_OTHER_DAY = {"min_interval_days": 2, "max_interval_days": 4}
SESSIONS = {"first_session_minutes": 60, "session_minutes": 45}

DEFAULT_PROTOCOLS: list[dict[str, Any]] = [
    {
        "code": "liver-5fx",
        "name": "Liver SBRT, 5 fractions (every 24-72 h)",
        "site": "liver",
        "fractions": 5,
        "min_hours_between": 20,
        "min_interval_days": 1,
        "max_interval_days": 3,
        "min_overall_days": 5,
        "max_overall_days": 15,
        "capabilities": ["sbrt", "cbct", "breath_hold"],
        **SESSIONS,
    },
    {
        "code": "lung-peripheral-3fx",
        "name": "Lung SBRT peripheral, 3 fractions (at least 48 h apart)",
        "site": "lung",
        "fractions": 3,
        "min_hours_between": 48,
        "min_interval_days": 2,
        "max_interval_days": 8,
        "min_overall_days": 8,
        "max_overall_days": 14,
        "capabilities": ["sbrt", "cbct", "gating"],
        **SESSIONS,
    },
    {
        "code": "lung-central-5fx",
        "name": "Lung SBRT central, 5 fractions (every other day)",
        "site": "lung",
        "fractions": 5,
        "max_overall_days": 14,
        "capabilities": ["sbrt", "cbct", "gating"],
        **EVERY_OTHER_DAY,
        **SESSIONS,
    },
    {
        "code": "lung-single",
        "name": "Lung SBRT, single fraction",
        "site": "lung",
        "fractions": 1,
        "capabilities": ["sbrt", "cbct", "gating"],
        "first_session_minutes": 90,
        "session_minutes": 90,
    },
    {
        "code": "prostate-5fx",
        "name": "Prostate SBRT, 5 fractions (every other day)",
        "site": "prostate",
        "fractions": 5,
        "max_overall_days": 14,
        "capabilities": ["sbrt", "cbct"],
        **EVERY_OTHER_DAY,
        **SESSIONS,
    },
    {
        "code": "spine-1fx",
        "name": "Spine SBRT, single fraction",
        "site": "spine",
        "fractions": 1,
        "capabilities": ["sbrt", "cbct"],
        **SESSIONS,
    },
    {
        "code": "spine-3fx",
        "name": "Spine SBRT, 3 fractions (every other day)",
        "site": "spine",
        "fractions": 3,
        "max_overall_days": 7,
        "capabilities": ["sbrt", "cbct"],
        **EVERY_OTHER_DAY,
        **SESSIONS,
    },
    {
        "code": "oligomets-3fx",
        "name": "Oligometastases SABR, 3 fractions (every other day)",
        "site": "oligomets",
        "fractions": 3,
        "max_overall_days": 14,
        "capabilities": ["sbrt", "cbct"],
        **EVERY_OTHER_DAY,
        **SESSIONS,
    },
    {
        "code": "oligomets-5fx",
        "name": "Oligometastases SABR, 5 fractions (every other day)",
        "site": "oligomets",
        "fractions": 5,
        "max_overall_days": 14,
        "capabilities": ["sbrt", "cbct"],
        **EVERY_OTHER_DAY,
        **SESSIONS,
    },
]
