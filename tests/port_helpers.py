"""Free TCP ports for tests that start servers (tests/ is on sys.path through its conftest)."""
from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1: every socket stays bound while the kernel picks, so it
    cannot hand the same port out twice (separate picks can collide, and the second server then
    fails with "address already in use")."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
