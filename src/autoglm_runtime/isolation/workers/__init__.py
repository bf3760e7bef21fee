"""Worker supervision: one worker per loaded model, in its own process (or subinterpreter).

:mod:`~autoglm_runtime.isolation.workers.process` starts, calls, restarts and stops a worker;
:mod:`~autoglm_runtime.isolation.workers.subinterp` picks the backend; the wire format and the worker's own
main live in ``isolation/_scripts/`` because they run where the SDK is not installed.
"""
