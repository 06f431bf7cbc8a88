"""Regenerate proto/dancewire_pb2.py (+ .pyi) from proto/dancewire.proto with grpcio-tools' bundled protoc.

    dancewire proto regen            # rewrite the generated files
    dancewire proto regen --check    # exit 1 if they differ from what protoc would write
    python proto/regen.py [--check]  # the same, without the CLI

The generated module needs the protobuf runtime >= 7.35 (setup.cfg pins it). The test
``tests/link/test_link_proto.py`` regenerates into a temporary folder and compares bytes.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SOURCE = "dancewire.proto"
GENERATED = ("dancewire_pb2.py", "dancewire_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on proto/dancewire.proto, writing the generated files into `out_dir`."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - dev dependency
        raise RuntimeError("grpcio-tools is needed to regenerate the protocol module "
                           "(pip install -e '.[dev]')") from exc
    import importlib.resources

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}",
            f"--python_out={out_dir}", f"--pyi_out={out_dir}", str(PROTO_DIR / SOURCE)]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit status {rc}")
    return [out_dir / name for name in GENERATED]


def differences() -> list[str]:
    """Names of generated files whose committed content differs from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [p.name for p in fresh
                if not (PROTO_DIR / p.name).exists() or (PROTO_DIR / p.name).read_bytes() != p.read_bytes()]


def regen() -> list[Path]:
    """Rewrite the committed generated files; returns their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        written = []
        for p in generate(Path(tmp)):
            target = PROTO_DIR / p.name
            target.write_bytes(p.read_bytes())
            written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        diff = differences()
        if diff:
            print(f"out of date: {', '.join(diff)} (run: dancewire proto regen)", file=sys.stderr)
            return 1
        print("generated protocol module is up to date")
        return 0
    for path in regen():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
