"""The i2v services: one folder per service, plus the bus runtime they share and the CLI."""
