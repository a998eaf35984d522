"""The API's routers, one module per group of endpoints; each takes the objects it serves.

They are mounted by :func:`docstatus.api.create_app`, and each can be
mounted in any FastAPI app (``docstatus.api`` exports them).
"""
