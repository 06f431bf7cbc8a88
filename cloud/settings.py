"""Settings of the cloud process (one typed object; file, then $DANCEWIRE_CLOUD_*, then --set)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dancewire.paths import state_dir


def default_db_url() -> str:
    return f"sqlite:///{state_dir() / 'cloud.sqlite3'}"


def default_gallery_path() -> Path:
    return state_dir() / "gallery.npz"


@dataclass(frozen=True)
class ClassifySettings:
    k: int = 10                      # kNN neighbours (Tong reports top-3; more neighbours vote more smoothly)
    knn_weight: float = 0.5          # share of the kNN vote in the style logits (the rest: prototypes); refitted per gallery
    knn_temperature: float = 0.05    # softmax temperature over neighbour cosines (vote weights); refitted per gallery
    proto_temperature: float = 0.05  # softmax temperature over prototype cosines
    exact_max: int = 10000           # galleries up to this size use exact cosine search, larger ones HNSW
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef: int = 64                # query-time beam (>= k): recall vs speed, see `dancewire bench cloud` ef_sweep
    calibrate: bool = True           # fit knn_weight, knn_temperature and a temperature on the gallery at enrolment
                                     # (leave-one-video-out; see cloud.classify.fit_classifier)


@dataclass(frozen=True)
class AggregateSettings:
    horizon_s: float = 8.0           # per-dancer smoothing horizon in media time (windows older are "late")
    tau_s: float = 3.0               # exponential weight time constant inside the horizon
    switch_margin: float = 0.15      # a new label must beat the current one by this much probability...
    switch_hold: int = 3             # ...for this many consecutive updates...
    enter_threshold: float = 0.4     # ...and reach this probability (also needed for the first label)
    dancer_timeout_s: float = 10.0   # wall seconds without windows before a dancer is shown as idle


@dataclass(frozen=True)
class CloudSettings:
    db_url: str = field(default_factory=default_db_url)   # sqlite:///path or postgresql://user@host:port/db
    gallery_path: Path = field(default_factory=default_gallery_path)
    api_host: str = "127.0.0.1"
    api_port: int = 8765
    token: str = ""                  # API/dashboard token; empty: generated once and kept in the state dir
    metrics_public: bool = False     # serve /metrics without the token
    zmq_bind: str = "tcp://127.0.0.1:5555"
    server_key: str = "cloud"        # CURVE key name or .key_secret path (`dancewire keys generate cloud`)
    allow_dir: str = ""              # folder of allowed edge public keys ("" = the keys folder's default)
    retention_days: float = 30.0     # windows/results older than this are deleted (0 = keep forever)
    store_embeddings: bool = True    # keep each window's embedding (re-classification after re-enrolment)
    classify: ClassifySettings = field(default_factory=ClassifySettings)
    aggregate: AggregateSettings = field(default_factory=AggregateSettings)

    def validate(self) -> "CloudSettings":
        from dancewire.config import require

        require(1 <= self.api_port <= 65535, "cloud", f"api_port {self.api_port} not in 1..65535")
        require(self.retention_days >= 0, "cloud", "retention_days must be >= 0")
        c, a = self.classify, self.aggregate
        require(c.k >= 1 and c.exact_max >= 0 and c.hnsw_m >= 2 and c.hnsw_ef >= c.k, "classify",
                "k >= 1, exact_max >= 0, hnsw_m >= 2 and hnsw_ef >= k")
        require(0.0 <= c.knn_weight <= 1.0, "classify", "knn_weight must be in [0, 1]")
        require(min(c.knn_temperature, c.proto_temperature) > 0, "classify", "temperatures must be > 0")
        require(a.horizon_s > 0 and a.tau_s > 0 and a.switch_hold >= 1 and a.dancer_timeout_s > 0, "aggregate",
                "horizon_s, tau_s and dancer_timeout_s must be > 0, switch_hold >= 1")
        return self


def load_settings(file: str | Path | None = None, overrides: list[str] | None = None) -> CloudSettings:
    from dancewire.config import load
    return load(CloudSettings, file=file, env_prefix="DANCEWIRE_CLOUD", overrides=overrides).validate()
