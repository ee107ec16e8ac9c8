"""Exports of ingested sessions: NWB files and report figures (reads schemas/ only)."""
