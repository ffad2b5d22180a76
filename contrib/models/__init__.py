"""Denoiser networks (``model`` plugins)."""
