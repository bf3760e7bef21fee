"""Print the tables of docs/error-codes.md from the registry (paste them in after changing errors.py).

    .venv/bin/python scripts/gen_error_docs.py
"""

from autoglm_runtime.errors import REGISTRY, error_classes

print("| code | title | severity | meaning | action |")
print("| --- | --- | --- | --- | --- |")
for entry in REGISTRY.values():
    print(f"| {entry.code} | {entry.title} | {entry.severity} | {entry.meaning} | {entry.action} |")
print()
print("| exception | code | HTTP | gRPC | exit |")
print("| --- | --- | --- | --- | --- |")
for cls in error_classes():
    print(f"| `{cls.__name__}` | {cls.code} | {cls.http_status} | {cls.grpc_status} | {cls.exit_code} |")
