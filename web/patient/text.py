"""The patient page's words in each language the product ships (English, Spanish).

Kept as plain tables rather than a gettext catalogue: the page is small, and the message
templates in notifications/ handle their own languages the same way.
"""

from __future__ import annotations

PAGE_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your appointments",
        "call_us": "Questions or need to change a time? Call your clinic:",
        "next_heading": "Your next appointment",
        "confirm_button": "Confirm my next appointment",
        "confirm_hint": "Tap the button to let us know you will come.",
        "confirmed": "Confirmed. Thank you, see you then.",
        "just_confirmed": "Thank you! Your appointment is confirmed.",
        "awaiting": "The time of this appointment is still to be confirmed by your clinic. "
        "We will let you know.",
        "schedule_heading": "Your schedule",
        "session_of": "Session {number} of {total}",
        "to_be_confirmed": "to be confirmed",
        "confirmed_badge": "confirmed",
        "first_longer": "The first session is longer: about {minutes} minutes.",
        "about_minutes": "About {minutes} minutes.",
        "past": "past",
        "times_in": "Times are shown in {tz}.",
        "no_sessions": "You have no upcoming appointments. If you did not expect this, "
        "please call your clinic.",
        "prep_heading": "How to prepare",
        "calendar_button": "Add to my calendar",
        "calendar_hint": "Downloads a calendar file with all your appointments.",
        "ics_summary": "Appointment - {clinic}",
    },
    "es": {
        "title": "Sus citas",
        "call_us": "¿Tiene preguntas o necesita cambiar una hora? Llame a su centro:",
        "next_heading": "Su próxima cita",
        "confirm_button": "Confirmar mi próxima cita",
        "confirm_hint": "Pulse el botón para avisarnos de que vendrá.",
        "confirmed": "Confirmada. Gracias, le esperamos.",
        "just_confirmed": "¡Gracias! Su cita está confirmada.",
        "awaiting": "Su centro aún tiene que confirmar la hora de esta cita. Le avisaremos.",
        "schedule_heading": "Sus sesiones",
        "session_of": "Sesión {number} de {total}",
        "to_be_confirmed": "por confirmar",
        "confirmed_badge": "confirmada",
        "first_longer": "La primera sesión es más larga: unos {minutes} minutos.",
        "about_minutes": "Unos {minutes} minutos.",
        "past": "pasada",
        "times_in": "Las horas se muestran en {tz}.",
        "no_sessions": "No tiene citas próximas. Si no lo esperaba, llame a su centro.",
        "prep_heading": "Cómo prepararse",
        "calendar_button": "Añadir a mi calendario",
        "calendar_hint": "Descarga un archivo de calendario con todas sus citas.",
        "ics_summary": "Cita - {clinic}",
    },
}

# Shown when a link cannot be used, before anything about its owner is known: both
# languages, and the same words whatever went wrong.
INVALID_LINK = (
    ("en", "This link is no longer valid. Please call your clinic."),
    ("es", "Este enlace ya no es válido. Por favor, llame a su centro."),
)
# Shown for a real link that has ended (revoked, expired, its course cancelled), in the
# language of the patient it was sent to.
ENDED_LINK: dict[str, dict[str, str]] = {
    "en": {
        "title": "This link is no longer in use",
        "explain": "For your privacy, links to your appointments stop working after a while "
        "or when your details change.",
        "call": "Please call your clinic for your appointment times or a new link:",
        "call_no_number": "Please call your clinic for your appointment times or a new link.",
    },
    "es": {
        "title": "Este enlace ya no está en uso",
        "explain": "Por su privacidad, los enlaces a sus citas dejan de funcionar después de "
        "un tiempo o cuando cambian sus datos.",
        "call": "Llame a su centro para conocer las horas de sus citas o pedir un enlace nuevo:",
        "call_no_number": "Llame a su centro para conocer las horas de sus citas o pedir un "
        "enlace nuevo.",
    },
}
TOO_MANY_REQUESTS = (
    ("en", "Too many requests. Please wait a minute and try again."),
    ("es", "Demasiadas solicitudes. Espere un minuto y vuelva a intentarlo."),
)


def page_language(language: str | None) -> str:
    """ "es-MX" -> "es"; anything without a table here -> English."""
    code = (language or "").replace("_", "-").split("-")[0].lower()
    return code if code in PAGE_TEXT else "en"
