"""What goes out when: the dispatcher (due accounts → worker sessions) and recurring schedules."""
