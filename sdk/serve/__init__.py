"""``chromaforge serve``: an HTTP service with dynamic batching and a browser page.

Needs the ``serve`` extra (``pip install "chromaforge[serve]"``: Starlette, uvicorn,
prometheus_client, python-multipart); ``import sdk`` never imports it. See :mod:`sdk.serve.app`
for the endpoints, :mod:`sdk.serve.batcher` for the batching, :mod:`sdk.serve.admission` for the
memory budget requests reserve from, and :mod:`sdk.serve.connections` for the connection limits.

Example:
    >>> from sdk.serve import ServeConfig, create_app, serve
    >>> app = create_app(ServeConfig(model_dir="models/mine", max_batch=8))   # any ASGI server runs it
    >>> serve(ServeConfig(port=8000), access_log=False)   # uvicorn until SIGTERM; no per-request lines
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sdk.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'sdk.serve' has no attribute {name!r}")
