"""Local infrastructure: nats-server and SeaweedFS launched from their wheels, and the object-store port."""
