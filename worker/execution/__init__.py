"""Where a job is executed: `runner` sends one account's session of jobs; `retry` decides what a failure means."""
