"""Records -> DataJoint: each ingest is one transaction (all rows or none)."""
