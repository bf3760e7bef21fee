"""The example model server: config sync, isolated models and input guards in one ASGI app."""
