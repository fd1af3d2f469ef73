"""The operations dashboard and JSON admin API: `passito-jobs web` (docs/dashboard.md).

Importing this package loads nothing heavy: the app (`passito_jobs.web.app`) needs the `web`
extra (Starlette, uvicorn, Jinja2, argon2-cffi).
"""
