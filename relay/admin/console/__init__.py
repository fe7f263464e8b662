"""The operator console: server-rendered pages under /ui/ on the admin listener.

``app`` mounts it; ``session`` signs its cookies and CSRF tokens; ``history``
keeps the overview's per-minute counts; ``views`` shapes records for the
templates; ``pages`` and ``actions`` are the handlers. Everything a page shows
was written by a stranger: the templates autoescape, and the CSP allows no
inline script.
"""
