"""`make load`: the staff workload under Locust against the production stack, with reminders
going out at the same time (see bench/load/__main__.py)."""
