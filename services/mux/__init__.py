"""Mux: browser-playable H.264 MP4 with faststart, and a poster."""
