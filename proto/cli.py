"""`dancewire keys ...` (CURVE keys and the cloud's allow-list) and `dancewire proto regen`."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="CURVE keys for the edge-cloud link",
                          description="Generate and list CURVE keys; manage the cloud's allow-list of edge keys. "
                                      "Keys live in $DANCEWIRE_HOME/keys unless --dir is given.")
    ks = keys.add_subparsers(dest="keys_command", metavar="ACTION")

    p = ks.add_parser("generate", help="create NAME.key (public) and NAME.key_secret (secret, 0600)")
    p.add_argument("name", help="e.g. cloud, or edge-studio-a")
    p.add_argument("--force", action="store_true", help="replace an existing key of that name")
    p.set_defaults(func=_generate)

    p = ks.add_parser("list", help="list keypairs, public keys and the allow-list")
    p.set_defaults(func=_list)

    p = ks.add_parser("allow", help="let an edge connect: add its public key file to the cloud's allow-list (a running cloud reads it within a second)")
    p.add_argument("public_key_file", type=Path)
    p.add_argument("--name", default=None, help="name in the allow-list (default: the file's name)")
    p.set_defaults(func=_allow)

    p = ks.add_parser("revoke", help="remove NAME from the allow-list (a running cloud disconnects that edge within a second)")
    p.add_argument("name")
    p.set_defaults(func=_revoke)

    keys.add_argument("--dir", type=Path, default=None, help="keys folder (default: $DANCEWIRE_HOME/keys)")
    for parser in ks.choices.values():  # also accepted after the action; SUPPRESS keeps the parent's value
        parser.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="keys folder (default: $DANCEWIRE_HOME/keys)")
    keys.set_defaults(func=lambda args: (keys.print_help(), 2)[1])

    proto = sub.add_parser("proto", help="wire protocol tools")
    ps = proto.add_subparsers(dest="proto_command", metavar="ACTION")
    p = ps.add_parser("regen", help="regenerate proto/dancewire_pb2.py from proto/dancewire.proto")
    p.add_argument("--check", action="store_true", help="only check that the generated module is up to date")
    p.set_defaults(func=_regen)
    proto.set_defaults(func=lambda args: (proto.print_help(), 2)[1])


def _generate(args) -> int:
    from proto import keys

    public, secret = keys.generate(args.name, args.dir, force=args.force)
    print(f"public key: {public}  ({keys.load_public(public).decode()})")
    print(f"secret key: {secret}  (keep it on this machine)")
    return 0


def _list(args) -> int:
    from proto import keys

    items = keys.list_keys(args.dir)
    if not items:
        print(f"no keys in {keys.keys_dir(args.dir)} (create one: dancewire keys generate NAME)")
        return 0
    print(f"{'kind':<9} {'name':<24} public key")
    for k in items:
        kind = "allowed" if k.allowed else ("keypair" if k.has_secret else "public")
        print(f"{kind:<9} {k.name:<24} {k.public_key}")
    return 0


def _allow(args) -> int:
    from proto import keys

    target = keys.allow(args.public_key_file, args.dir, args.name)
    print(f"allowed {target.stem}: {keys.load_public(target).decode()} ({target})")
    return 0


def _revoke(args) -> int:
    from proto import keys

    target = keys.revoke(args.name, args.dir)
    print(f"revoked {args.name} ({target})")
    return 0


def _regen(args) -> int:
    from proto import regen

    return regen.main(["--check"] if args.check else [])
