"""The committed retrieval/v1 stubs are what scripts/gen_protos.sh generates from protos/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["retrieval_pb2.py", "retrieval_pb2.pyi", "retrieval_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in FILES:
        generated = (tmp_path / "retrieval" / "v1" / name).read_text()
        committed = (ROOT / "retrieval" / "v1" / name).read_text()
        assert generated == committed, f"retrieval/v1/{name} is stale: run scripts/gen_protos.sh"


def test_stubs_import_as_a_package():
    from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

    assert retrieval_pb2.DESCRIPTOR.package == "retrieval.v1"
    assert hasattr(retrieval_pb2_grpc, "RetrievalStub")
