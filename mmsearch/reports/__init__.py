"""Offline reports on what serving recorded: ``mmsearch experiments report`` (the A/B report and its statistics).

Not an indexing stage and not a service: it reads the event store serving
writes, with the jobs' MongoDB client and error line.
"""
