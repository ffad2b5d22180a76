"""Built-in correctors (predictor-corrector sampling)."""
