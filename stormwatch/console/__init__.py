"""The operator console (issue #14): server-rendered HTML pages served by the gateway under /console.

``render`` is pure (read-model values in, escaped HTML out; no clock, no I/O), ``assets`` holds the
page's CSS and JavaScript (inside the package: no CDN, no front-end build), and ``web`` is the
aiohttp part wired into the gateway's router: sessions, CSRF, actions and server-sent events.
docs/console.md describes it.
"""
