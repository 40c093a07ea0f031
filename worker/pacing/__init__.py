"""Where pacing is decided: the per-account rules (`rules`) and the holds a vendor answer puts on an account (`holds`)."""
