"""One router per resource; ``scheduler.api.app.create_app`` includes them in this order."""
