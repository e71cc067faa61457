"""Delivery channels: Twilio SMS, SMTP email and the local outbox used without either."""
