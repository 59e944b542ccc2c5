"""The HTTP edge: the aiohttp app (REST API, server-sent events, static web UI), its OpenAPI
description and the JSON views of jobs."""
