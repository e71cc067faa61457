"""Booking domain: SBRT courses, fractions, linacs and the rules that place them."""
