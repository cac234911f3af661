"""The Twilio connector: SMS, MMS and voice webhooks in, SMS out through the outbox."""
