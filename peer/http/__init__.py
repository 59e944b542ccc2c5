"""The HTTP edge: the aiohttp app (REST API, server-sent events, static web UI), its OpenAPI
description, the JSON views of jobs, and the protocols it reads the peer through (host.py)."""
