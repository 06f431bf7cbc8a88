"""Cloud: classify + aggregate latency/throughput for 1k/10k/100k-reference galleries, and window arrival -> dashboard.

Galleries are synthetic but structured like real ones: `--styles` style centres, each
reference video a point near its style's centre, each window a noisy point near its video
(unit vectors, `--dim` dimensions). Queries are fresh windows drawn the same way. For each
size the benchmark reports single-window classify and classify+aggregate latency
(percentiles), batched throughput, and for approximate indexes the recall@k against exact
search and the style agreement with exact classification.

Arrival -> dashboard: a cloud service with its API runs in this process; a simulated edge
sends `--dancers` dancers' windows (2 per second each, real time, for `--seconds`); the
real dashboard runs in headless chromium (if installed; else a WebSocket client stands in and
the result says so) and acknowledges every window it has drawn. Reported: window arrival at
the cloud -> drawn in the page (the browser's clock and the cloud's are the same machine's).
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import percentiles, pyplot


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="1000,10000,100000", help="gallery sizes (comma-separated)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--styles", type=int, default=12)
    p.add_argument("--queries", type=int, default=2000, help="single-window queries per size")
    p.add_argument("--batch", type=int, default=64, help="windows per batch for the throughput figure")
    p.add_argument("--dancers", type=int, default=8, help="dancers streamed for the dashboard measurement")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the dashboard measurement")
    p.add_argument("--no-browser", action="store_true", help="skip chromium; measure with a WebSocket client")


def synthetic(n: int, dim: int, styles: int, seed: int, per_video: int = 50):
    """(embeddings (n, dim), style index (n,), video index (n,)) and a query sampler."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(styles, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n_videos = max(styles, n // per_video)
    v_style = np.arange(n_videos) % styles
    videos = centres[v_style] + 1.2 * rng.normal(size=(n_videos, dim)) / np.sqrt(dim)
    vid = rng.integers(0, n_videos, n)
    x = videos[vid] + 1.0 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def queries(m: int, qseed: int, noise: float = 1.0, style: int | None = None):
        r = np.random.default_rng(qseed)
        v = r.integers(0, n_videos, m)
        if style is not None:                      # windows of one dancer who keeps one style
            v = np.full(m, style)
        q = centres[v_style[v]] + 1.2 * r.normal(size=(m, dim)) / np.sqrt(dim) + noise * r.normal(size=(m, dim)) / np.sqrt(dim)
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), v_style[v]
    return x, v_style[vid], vid, queries


def gallery_of(x, style, vid):
    from cloud.gallery import Gallery
    from cloud.records import Reference
    refs = [Reference(f"r{i}", f"style{s:02d}", group=f"group{v % 24:02d}", video=f"video{v:05d}")
            for i, (s, v) in enumerate(zip(style.tolist(), vid.tolist()))]
    return Gallery(x, refs, {"model_id": "synthetic", "hash": "synthetic"})


def bench_size(n: int, args) -> dict:
    from cloud.aggregate import Aggregator
    from cloud.classify import Classifier
    from cloud.records import WindowIn
    from cloud.settings import ClassifySettings

    x, style, vid, queries = synthetic(n, args.dim, args.styles, seed=n)
    g = gallery_of(x, style, vid)
    s = ClassifySettings()
    t = time.perf_counter()
    clf = Classifier(g, s)                 # auto: exact up to exact_max, HNSW above
    build_s = time.perf_counter() - t
    q, q_style = queries(args.queries, n + 1)
    for i in range(50):                    # warm-up
        clf.classify(q[i:i + 1])
    agg = Aggregator(g)
    cls_ms, total_ms, cpu_ms, correct = [], [], [], 0
    for i in range(len(q)):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        c = clf.classify(q[i:i + 1])[0]
        t1 = time.perf_counter()
        agg.update(WindowIn("bench", "s", i % 16, i, 0.5 * (i // 16), 0.5 * (i // 16) + 2.0, q[i]), c)
        t2 = time.perf_counter()
        cpu_ms.append(1000 * (time.thread_time() - c0))
        cls_ms.append(1000 * (t1 - t0))
        total_ms.append(1000 * (t2 - t0))
        correct += c.style == f"style{q_style[i]:02d}"
    # batched throughput (classify + aggregate)
    nb = max(1, min(len(q), 1024) // args.batch)
    t0 = time.perf_counter()
    for b in range(nb):
        batch = q[b * args.batch:(b + 1) * args.batch]
        res = clf.classify(batch)
        for j, c in enumerate(res):
            k = b * args.batch + j
            agg.update(WindowIn("bench", "t", k % 16, 10**6 + k, 0.5 * k, 0.5 * k + 2.0, batch[j]), c)
    thr = nb * args.batch / (time.perf_counter() - t0)
    out = {"references": n, "index": clf.index.kind, "index_build_s": build_s,
           "classify_ms": percentiles(cls_ms, (50, 95, 99)) | {"mean": float(np.mean(cls_ms))},
           "classify_aggregate_ms": percentiles(total_ms, (50, 95, 99)) | {"mean": float(np.mean(total_ms))},
           "classify_aggregate_cpu_ms": {"mean": float(np.mean(cpu_ms)),
                                         "note": "CPU time of this thread (excludes waiting for a core)"},
           "throughput_windows_per_s": thr, "style_accuracy": correct / len(q)}
    if clf.index.kind != "exact":
        exact = Classifier(gallery_of(x, style, vid), s, index_kind="exact")
        m = min(500, len(q))
        _, rows_a = clf.index.search(q[:m], s.k)
        _, rows_e = exact.index.search(q[:m], s.k)
        out["recall_at_k"] = float(np.mean([len(set(a) & set(b)) / s.k for a, b in zip(rows_a, rows_e)]))
        ra, re_ = clf.classify(q[:m]), exact.classify(q[:m])
        out["style_agreement_with_exact"] = float(np.mean([a.style == b.style for a, b in zip(ra, re_)]))
        ex_ms = []
        for i in range(min(300, len(q))):
            t0 = time.perf_counter()
            exact.classify(q[i:i + 1])
            ex_ms.append(1000 * (time.perf_counter() - t0))
        out["exact_classify_ms"] = percentiles(ex_ms, (50, 95, 99))
        out["ef_sweep"] = ef_sweep(clf, exact, q, q_style, s)
    return out


def ef_sweep(clf, exact, q, q_style, s, efs=(16, 32, 64, 128, 256)) -> dict:
    """HNSW query beam vs per-window classify time, recall@k and agreement with exact search."""
    default = clf.index.ef
    m = min(500, len(q))
    _, rows_e = exact.index.search(q[:m], s.k)
    styles_e = [c.style for c in exact.classify(q[:m])]
    out = {}
    for ef in efs:
        if ef < s.k:
            continue
        clf.index.set_ef(ef)
        ms = []
        for i in range(len(q)):
            t0 = time.perf_counter()
            clf.classify(q[i:i + 1])
            ms.append(1000 * (time.perf_counter() - t0))
        _, rows_a = clf.index.search(q[:m], s.k)
        out[str(ef)] = {"classify_ms": percentiles(ms, (50, 95, 99)),
                        "recall_at_k": float(np.mean([len(set(a) & set(b)) / s.k for a, b in zip(rows_a, rows_e)])),
                        "style_agreement_with_exact": float(np.mean(
                            [c.style == e for c, e in zip(clf.classify(q[:m]), styles_e)])),
                        "style_accuracy": float(np.mean([c.style == f"style{y:02d}"
                                                         for c, y in zip(clf.classify(q), q_style)]))}
    clf.index.set_ef(default)
    return out


def bench_stability(args, dancers: int = 12, windows: int = 240, noise: float = 3.5) -> dict:
    """Label stability: each dancer keeps one style for `windows` windows (2 per second); count how often
    the per-window argmax and the stable (hysteresis) label change, and how many windows the first
    stable label takes. Queries are noisier than in the latency figures (`noise`), so that single
    windows are often misclassified, as a dancer's odd moves are."""
    from cloud.aggregate import Aggregator
    from cloud.classify import Classifier
    from cloud.records import WindowIn

    x, style, vid, queries = synthetic(10000, args.dim, args.styles, seed=3)
    g = gallery_of(x, style, vid)
    clf = Classifier(g)
    agg = Aggregator(g)
    raw_flips, stable_flips, first, correct_stable, raw_acc = [], [], [], [], []
    for d in range(dancers):
        want = d % args.styles
        q, _ = queries(windows, 1000 + d, noise=noise, style=want)
        raw, stable = [], []
        for i, e in enumerate(q):
            c = clf.classify(e[None])[0]
            r = agg.update(WindowIn("stab", "s", d, i, 0.5 * i, 0.5 * i + 2.0, e), c)
            raw.append(c.style)
            stable.append(r.stable_style)
        raw_flips.append(sum(a != b for a, b in zip(raw, raw[1:])))
        raw_acc.append(float(np.mean([s == f"style{want:02d}" for s in raw])))
        labelled = [s for s in stable if s]
        stable_flips.append(sum(a != b for a, b in zip(labelled, labelled[1:])))
        first.append(stable.index(labelled[0]) if labelled else None)
        correct_stable.append(float(np.mean([s == f"style{want:02d}" for s in labelled])) if labelled else 0.0)
    minutes = windows * 0.5 / 60.0
    return {"dancers": dancers, "windows_per_dancer": len(q), "minutes_per_dancer": minutes, "query_noise": noise,
            "raw_window_accuracy": float(np.mean(raw_acc)),
            "raw_label_changes_per_minute": float(np.mean(raw_flips) / minutes),
            "stable_label_changes_per_minute": float(np.mean(stable_flips) / minutes),
            "windows_to_first_stable_label": float(np.mean([f for f in first if f is not None])),
            "stable_label_accuracy": float(np.mean(correct_stable))}


class _Edge(threading.Thread):
    def __init__(self, service, queries, dancers, seconds):
        super().__init__(daemon=True)
        self.service, self.q, self.dancers, self.seconds = service, queries, dancers, seconds
        self.stop = threading.Event()

    def run(self):
        from cloud.records import BeatGridIn, WindowIn
        hop = 0.5 / self.dancers          # each dancer: a window every 0.5 s; dancers staggered
        k, start = 0, time.perf_counter()
        while not self.stop.is_set() and time.perf_counter() - start < self.seconds:
            due = start + k * hop
            while time.perf_counter() < due:
                time.sleep(min(0.002, max(0.0, due - time.perf_counter())))
            d, i = k % self.dancers, k // self.dancers
            t1 = 2.0 + 0.5 * i
            grids = []
            if d == 0 and i % 4 == 0:
                beats = [t1 + 0.5 * j for j in range(4)]
                grids = [BeatGridIn("bench-node", "bench", 10**7 + k, t1, t1 + 2, 120.0, 0.9, beats,
                                    [int(round(b / 0.5)) % 8 + 1 for b in beats])]
            w = WindowIn("bench-node", "bench", d, k, t1 - 2.0, t1, self.q[k % len(self.q)],
                         {"beat_alignment": 0.8}, 0.9)
            self.service.process([w], grids)
            k += 1


def bench_dashboard(args, tmp: Path) -> dict:
    import uvicorn

    from cloud.api import create_app, ws_impl
    from cloud.service import CloudService
    from cloud.settings import CloudSettings

    x, style, vid, queries = synthetic(10000, args.dim, args.styles, seed=7)
    g = gallery_of(x, style, vid)
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp / 'bench.sqlite3'}", gallery_path=tmp / "g.npz"),
                       gallery=g)
    token = "bench-token"
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(svc, token), host="127.0.0.1", port=port, log_level="warning",
                                          ws=ws_impl()))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.02)
    q, _ = queries(4000, 11)
    client, how, ws_ms = None, "", []
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        if not args.no_browser and chromium and driver:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            opts = webdriver.ChromeOptions()
            opts.binary_location = chromium
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                         f"--user-data-dir={tmp / 'profile'}", "--window-size=1366,900"):
                opts.add_argument(flag)
            client = webdriver.Chrome(service=Service(driver), options=opts)
            client.get(f"http://127.0.0.1:{port}/dashboard/#token={token}")
            deadline = time.time() + 20
            while client.execute_script("return document.getElementById('status').textContent") != "live":
                if time.time() > deadline:
                    raise RuntimeError("dashboard did not connect")
                time.sleep(0.05)
            how = "chromium (headless, Debian) running the real dashboard; latency = arrival -> drawn"
        else:
            how = "WebSocket client (no chromium); latency = arrival -> message received"
        import json

        import websocket
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/live?token={token}", timeout=10)
        stop = threading.Event()

        def listen():
            while not stop.is_set():
                try:
                    m = json.loads(ws.recv())
                except Exception:
                    return
                if m.get("type") == "window":
                    ws_ms.append(1000 * (time.time() - m["arrival"]))
        lt = threading.Thread(target=listen, daemon=True)
        lt.start()
        edge = _Edge(svc, q, args.dancers, args.seconds)
        edge.start()
        edge.join()
        time.sleep(0.5)
        stop.set()
        ws.close()
        dash = svc.latency.samples("dashboard")
        warm = max(0, len(dash) // 20)         # the first 5% include the page's first layout
        res = {"measured_with": how, "dancers": args.dancers, "seconds": args.seconds,
               "windows": svc.counters["windows"],
               "arrival_to_published_ms": percentiles(svc.latency.samples("publish"), (50, 95, 99)),
               "arrival_to_stored_ms": percentiles(svc.latency.samples("store"), (50, 95, 99)),
               "arrival_to_ws_client_ms": percentiles(ws_ms, (50, 95, 99)) | {"max": max(ws_ms) if ws_ms else None}}
        if dash:
            steady = dash[warm:]
            res["arrival_to_dashboard_ms"] = percentiles(steady, (50, 95, 99)) | {
                "max": float(max(steady)), "count": len(steady), "warmup_dropped": warm,
                "share_within_200ms": float(np.mean(np.array(steady) <= 200.0))}
            res["arrival_to_dashboard_ms_all"] = percentiles(dash, (50, 95, 99)) | {"max": float(max(dash))}
            res["_samples"] = steady
        return res
    finally:
        if client is not None:
            client.quit()
        server.should_exit = True
        th.join(10)
        svc.close()


def run(args) -> dict:
    from cloud.index import single_thread_blas
    single_thread_blas()              # as the cloud service does
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    per_size = {}
    for n in sizes:
        per_size[str(n)] = bench_size(n, args)
        print(f"{n} references: {per_size[str(n)]['index']} classify p50 "
              f"{per_size[str(n)]['classify_ms']['p50']:.3f} ms", flush=True)
    stability = bench_stability(args)
    tmp = Path(tempfile.mkdtemp(prefix="dancewire-bench-cloud-"))
    try:
        dash = bench_dashboard(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    samples = dash.pop("_samples", [])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(per_size)
    for j, key in enumerate(("classify_ms", "classify_aggregate_ms")):
        axes[0].bar(np.arange(len(names)) + 0.38 * j, [per_size[n][key]["p50"] for n in names], 0.38,
                    yerr=[[0] * len(names), [per_size[n][key]["p99"] - per_size[n][key]["p50"] for n in names]],
                    label=key.replace("_ms", "") + " (p50, bar to p99)")
    axes[0].axhline(1.0, color="r", ls="--", lw=1, label="goal 1 ms")
    axes[0].set_xticks(np.arange(len(names)) + 0.19, [f"{int(n):,}\n{per_size[n]['index']}" for n in names])
    axes[0].set_ylabel("ms per window")
    axes[0].set_title("per-window latency by gallery size")
    axes[0].legend(fontsize=8)
    if samples:
        axes[1].hist(samples, bins=40, color="#5ac8fa")
        axes[1].axvline(200, color="r", ls="--", lw=1, label="goal 200 ms")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("window arrival -> dashboard drawn (ms)")
    axes[1].set_title("arrival -> drawn in the dashboard (chromium)" if "chromium" in dash.get("measured_with", "")
                      else "arrival -> WebSocket client (no chromium)")
    fig.tight_layout()
    fig.savefig(args.plots / "bench-cloud.png", dpi=110)
    top = per_size[str(max(sizes))]
    metrics = {
        "classify_ms_p50_largest": top["classify_ms"]["p50"],
        "classify_ms_p99_largest": top["classify_ms"]["p99"],
        "classify_aggregate_ms_p50_largest": top["classify_aggregate_ms"]["p50"],
        "classify_aggregate_cpu_ms_mean_largest": top["classify_aggregate_cpu_ms"]["mean"],
        "throughput_windows_per_s_largest": top["throughput_windows_per_s"],
        "arrival_to_dashboard_ms_p50": dash.get("arrival_to_dashboard_ms", {}).get("p50"),
        "arrival_to_dashboard_ms_p95": dash.get("arrival_to_dashboard_ms", {}).get("p95"),
        "arrival_to_dashboard_ms_p99": dash.get("arrival_to_dashboard_ms", {}).get("p99"),
        "goal_classify_le_1ms_p95_at_largest": bool(top["classify_ms"]["p95"] <= 1.0),
        "goal_classify_le_1ms_p99_at_largest": bool(top["classify_ms"]["p99"] <= 1.0),
        "goal_dashboard_le_200ms_p95": (dash["arrival_to_dashboard_ms"]["p95"] <= 200.0)
        if "arrival_to_dashboard_ms" in dash else None,
    }
    import os
    metrics["stable_label_changes_per_minute"] = stability["stable_label_changes_per_minute"]
    metrics["raw_label_changes_per_minute"] = stability["raw_label_changes_per_minute"]
    return {"metrics": metrics, "galleries": per_size, "dashboard": dash, "stability": stability,
            "load_average": os.getloadavg(),
            "settings": {"dim": args.dim, "styles": args.styles, "queries": args.queries, "batch": args.batch}}
