"""The Flower ``ServerApp`` (``servers/server_app.py``) and the start-up condensation job.
Needs ``edgecond[flower]``."""
from servers.condense_job import ensure_buffer, resolve_buffer_path  # noqa: F401
from servers.server_app import ShippingStrategy, app, make_strategy  # noqa: F401

__all__ = ["app", "ShippingStrategy", "make_strategy", "ensure_buffer", "resolve_buffer_path"]
