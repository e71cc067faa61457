"""Patient messages: reminder policy, the outbox, channels (SMS, email, local) and templates."""
