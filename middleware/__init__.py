"""Pipeline stages, one module each, named after the config key that enables them."""
