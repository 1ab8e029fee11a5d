"""Jobs: plan, dispatch to a backend, watch, recover, assemble; every state change in SQLite."""
