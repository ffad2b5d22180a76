"""Built-in processes."""
