"""The HTTP API: the app factory, one router per resource, metrics and exports."""
