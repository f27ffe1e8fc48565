"""The Flower ``ClientApp`` (``clients/client_app.py``) and its task helpers. Needs ``edgecond[flower]``."""
from clients.client_app import app  # noqa: F401
from clients.task import *  # noqa: F401,F403
from clients.task import __all__ as _task_all

__all__ = ["app", *_task_all]
