"""The gateway: HTTP API, accounts and API keys, live progress over SSE, and the web page."""
