"""Server-side apps: the Flower ServerApp that ships per-client prefixes, and the condensation job."""
