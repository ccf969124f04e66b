"""Pure media and model stages; they know nothing about NATS or S3."""
