"""A real sync gRPC server on loopback with one guarded unary method, for the observability tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc

from autoglm_runtime.validation.grpc import ValidationInterceptor


@contextmanager
def unary_channel(
    interceptor: ValidationInterceptor, complete: Callable[[bytes, grpc.ServicerContext], bytes], service: str
) -> Iterator[grpc.Channel]:
    """A channel to a server whose ``/{service}/Complete`` is ``complete`` behind ``interceptor``."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    handlers = {"Complete": grpc.unary_unary_rpc_method_handler(complete)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        server.stop(None).wait()
