"""Stdlib-only code run inside model environments, where the SDK is not installed.

``worker_main.py`` is the worker process (run with ``-I`` by the environment's interpreter); ``protocol.py``
is the wire format both sides share: the host imports it as a module of this package, the worker as a module of
this directory made a package of a private name by path (``worker_main._load_sibling``), so the files here import
one another relatively in either place.
"""
