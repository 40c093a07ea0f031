"""The store and its scripts: every Redis key, Lua script and record (jobs, accounts, dead letters, counters)."""
