"""Networks, data, training and evaluation built on the core and the plugins."""
