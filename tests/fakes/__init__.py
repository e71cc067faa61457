"""Real servers on loopback that stand in for external providers (Twilio, SMTP) in tests."""
