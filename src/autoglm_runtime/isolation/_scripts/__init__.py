"""Stdlib-only code run inside model environments, where the SDK is not installed.

``worker_main.py`` is the worker process (run with ``-I`` by the environment's interpreter); ``protocol.py``
is the wire format both sides share: the host imports it as a module, the worker loads it by file path.
"""
