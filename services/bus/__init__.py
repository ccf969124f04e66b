"""What every service shares about the bus: streams, publishing, and how a stage handles a command."""
