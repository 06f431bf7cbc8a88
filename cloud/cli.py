"""`dancewire cloud serve|enroll|gallery|token|prune|migrate`."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

from dancewire.errors import DancewireError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="the cloud: classify, aggregate, store, API and dashboard")
    cmds = cloud.add_subparsers(dest="cloud_command", metavar="COMMAND")
    cloud.set_defaults(func=lambda args: cloud.print_help() or 2)   # `dancewire cloud`: its own commands

    def common(p):
        p.add_argument("--config", type=Path, help="TOML settings file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set db_url=postgresql://... (repeatable)")

    p = cmds.add_parser("serve", help="run ingest + classification + store + API/dashboard in one process")
    common(p)
    p.add_argument("--no-ingest", action="store_true", help="API and dashboard only (no ZeroMQ ingest)")
    p.add_argument("--insecure-dev", action="store_true", help="ingest without CURVE encryption (loopback dev only)")
    p.set_defaults(func=cmd_serve)

    p = cmds.add_parser("enroll", help="add labelled references (edge JSONL, .npz embeddings, or videos/keypoints via the edge)")
    common(p)
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("--style", required=True, help="style / genre label")
    p.add_argument("--routine", default="", help="routine (choreography) name; enables per-eight-count scores")
    p.add_argument("--group", default="", help="group (crew, class, K-pop group...)")
    p.add_argument("--video", default="", help="reference video name (default: an .npz's per-window `video`, else each "
                                                  "input's file name); give every "
                                                  "camera of one performance the same name, so the held-out fit does not "
                                                  "see a performance it holds out from another camera")
    p.add_argument("--score", type=float, default=math.nan, help="a labelled performance score for these inputs")
    p.add_argument("--dancer", type=int, default=None, help="only this track id of the inputs")
    p.add_argument("--phrase-seconds", type=float, default=4.0, help="eight-count length when inputs carry no beats")
    p.add_argument("--analyze-cmd", default=None, help="command that turns an input into edge JSONL ({input}, "
                                                          "{output} are substituted; default: `dancewire encoder "
                                                          "embed` for keypoint files, `dancewire edge analyze` else)")
    p.add_argument("--gallery", type=Path, default=None, help="gallery file (default: settings gallery_path)")
    p.add_argument("--new", action="store_true", help="start a new gallery instead of adding to the existing one")
    p.add_argument("--no-fit", action="store_true", help="do not refit the classifier (mixture, calibration) or the score head "
                                                        "(faster bulk enrolment)")
    p.set_defaults(func=cmd_enroll)

    p = cmds.add_parser("gallery", help="describe the gallery (JSON)")
    common(p)
    p.add_argument("--gallery", type=Path, default=None)
    p.set_defaults(func=cmd_gallery)

    p = cmds.add_parser("token", help="print the API/dashboard token (creating it if needed)")
    common(p)
    p.add_argument("--new", action="store_true", help="replace the stored token with a new one")
    p.set_defaults(func=cmd_token)

    p = cmds.add_parser("prune", help="apply the retention policy now")
    common(p)
    p.add_argument("--days", type=float, default=None, help="delete data older than this (default: retention_days)")
    p.set_defaults(func=cmd_prune)

    p = cmds.add_parser("migrate", help="create or upgrade the database schema")
    common(p)
    p.set_defaults(func=cmd_migrate)


def _settings(args):
    from cloud.settings import load_settings
    return load_settings(args.config, args.overrides)


def resolve_token(settings, new: bool = False) -> str:
    """settings.token, else the token kept in the state dir (created once, mode 0600)."""
    from cloud.api import new_token
    from dancewire.paths import state_dir

    if settings.token and not new:
        return settings.token
    path = state_dir() / "cloud-token"
    if path.exists() and not new:
        return path.read_text().strip()
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def cmd_token(args) -> int:
    print(resolve_token(_settings(args), new=args.new))
    return 0


def cmd_migrate(args) -> int:
    from cloud.store import Store
    s = _settings(args)
    store = Store(s.db_url)
    print(f"schema version {store.schema_version()} ({store.dialect})")
    store.close()
    return 0


def cmd_prune(args) -> int:
    from cloud.store import Store
    s = _settings(args)
    store = Store(s.db_url)
    print(json.dumps(store.prune(s.retention_days if args.days is None else args.days)))
    store.close()
    return 0


def cmd_gallery(args) -> int:
    from cloud.gallery import Gallery
    s = _settings(args)
    path = args.gallery or s.gallery_path
    if not Path(path).exists():
        raise DancewireError(f"no gallery at {path}: enrol references with `dancewire cloud enroll`")
    print(json.dumps(Gallery.load(path).summary(), indent=2))
    return 0


def cmd_enroll(args) -> int:
    from cloud.enroll import Labels, fit_gallery, references_from_file
    from cloud.gallery import Gallery
    from dancewire.progress import Progress

    s = _settings(args)
    path = args.gallery or s.gallery_path
    gallery = Gallery.empty() if args.new else Gallery.load_or_empty(path)
    labels = Labels(style=args.style, routine=args.routine, group=args.group, video=args.video,
                    score=args.score, dancer=args.dancer)
    prog = Progress("enrol", total=len(args.inputs))
    added = 0
    for inp in args.inputs:
        refs, emb, encoder = references_from_file(inp, labels, phrase_s=args.phrase_seconds,
                                                  analyze_cmd=args.analyze_cmd)
        gallery = gallery.merged(refs, emb, encoder)
        added += len(refs)
        prog.update(1, inp.name)
    report = {} if args.no_fit else fit_gallery(gallery, s.classify)
    gallery.save(path)
    print(json.dumps({"added": added, "gallery": str(path), **gallery.summary(), "fit": report}, indent=2, default=float))
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from cloud.api import create_app, ws_impl
    from cloud.service import CloudService

    s = _settings(args)
    token = resolve_token(s)
    service = CloudService(s)
    ingest = None
    if not args.no_ingest:
        ingest = start_ingest(service, s, insecure_dev=args.insecure_dev)
    app = create_app(service, token)
    host = s.api_host if s.api_host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(f"dancewire cloud: dashboard http://{host}:{s.api_port}/dashboard/#token={token}", flush=True)
    if ingest is not None:
        print(f"dancewire cloud: ingest on {s.zmq_bind}", flush=True)
    try:
        uvicorn.run(app, host=s.api_host, port=s.api_port, log_level="warning", ws=ws_impl())
    finally:
        if ingest is not None:
            ingest.stop()
        service.close()
    return 0


def start_ingest(service, settings, insecure_dev: bool = False):
    """Start the link's ZeroMQ ingest with the service as its handler."""
    from cloud.ingest import IngestServer
    from dancewire.paths import state_dir

    if not service.encoder_hashes():
        raise DancewireError("the gallery names no encoder: enrol references made by the edge's encoder first "
                             "(or run with --no-ingest)")
    kwargs = {"state_path": state_dir() / "ingest.sqlite"}
    if insecure_dev:
        kwargs["insecure_dev"] = True
    else:
        kwargs["server_key"] = settings.server_key
        if settings.allow_dir:
            kwargs["allow_dir"] = settings.allow_dir
    server = IngestServer(settings.zmq_bind, service, service.encoder_hashes, **kwargs)   # asked per Hello and batch
    server.start()
    return server
