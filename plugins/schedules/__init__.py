"""Built-in schedules, one per module."""
