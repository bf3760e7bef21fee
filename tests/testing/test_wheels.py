"""Offline wheels: valid metadata and RECORD, reproducible bytes."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from autoglm_runtime.testing.wheels import build_wheel, wheel_filename


def test_metadata_record_and_top_level(tmp_path: Path) -> None:
    path = build_wheel(
        tmp_path, "Conflict.Lib", "2.0", requires=["six>=1"], extras={"fast": ["zz>=1; os_name == 'posix'"]},
        requires_python=">=3.9",
    )  # fmt: skip
    assert path.name == "Conflict_Lib-2.0-py3-none-any.whl" == wheel_filename("Conflict.Lib", "2.0")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        metadata = zf.read("Conflict_Lib-2.0.dist-info/METADATA").decode()
        record = zf.read("Conflict_Lib-2.0.dist-info/RECORD").decode().splitlines()
        assert zf.read("conflict_lib/__init__.py") == b"__version__ = '2.0'\n"
        assert zf.read("Conflict_Lib-2.0.dist-info/top_level.txt") == b"conflict_lib\n"
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if not digest:
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}"
            assert int(size) == len(data)
    assert set(names) == {line.split(",")[0] for line in record}
    assert metadata.splitlines() == [
        "Metadata-Version: 2.1",
        "Name: Conflict.Lib",
        "Version: 2.0",
        "Requires-Python: >=3.9",
        "Requires-Dist: six>=1",
        "Provides-Extra: fast",
        "Requires-Dist: zz>=1; (os_name == 'posix') and extra == \"fast\"",
    ]


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    a = build_wheel(tmp_path / "a", "x", "1", modules={"x.py": "A = 1\n"})
    b = build_wheel(tmp_path / "b", "x", "1", modules={"x.py": "A = 1\n"})
    assert a.read_bytes() == b.read_bytes()
