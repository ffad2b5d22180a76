"""Built-in unmasking / remasking rules of masked samplers."""
