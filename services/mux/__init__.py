"""Mux: the video in the job's format (H.264 MP4 with faststart by default), and a poster."""
