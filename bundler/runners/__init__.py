"""Runners start the bundle's runtime in an environment: docker (image), venv (locked venv), host.

launch.py holds what every runner shares (the request, the environment, streaming the runtime's events,
staging and recording a run); execute.py runs a finished bundle through the chosen runner.
"""
