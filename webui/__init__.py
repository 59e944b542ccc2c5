"""Static web UI assets (shipped as package data)."""
