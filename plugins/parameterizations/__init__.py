"""Built-in parameterizations."""
