"""The API's routers, one module per group of endpoints; each takes the objects it serves."""
