"""archive: raw files of ingested sessions copied to archival storage, verified, then cleaned from the rig."""
