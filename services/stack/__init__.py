"""The embedded default: nats-server and SeaweedFS from their wheels plus every service as a process."""
