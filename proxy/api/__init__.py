"""Flask blueprints, one per client-facing surface."""
