"""The worker process: the Celery app and its broker transport, connections, task entry points and the launcher."""
