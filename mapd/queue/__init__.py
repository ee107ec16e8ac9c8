"""The durable work queue, in the database: found files and their states, claims on units of work, and the
one policy (settle, backoff) every kind of work follows."""
