"""The cloud process is SIGKILLed mid-stream and restarted: every window arrives exactly once."""
from __future__ import annotations

import threading
import time

import pytest

from edge.link import EdgeLink
from proto import codec

from link_helpers import embeddings, wait_until

N_BATCHES = 400          # x 3 dancers = 1200 windows
DANCERS = 3


@pytest.mark.slow
def test_cloud_killed_and_restarted_mid_stream_every_window_exactly_once(tmp_path, keyring, cloud_process):
    cloud = cloud_process(keyring).start()
    link = EdgeLink(cloud.endpoint, encoder_hash="enc-1", embedding_dim=64, node_id="studio-a",
                    session_id="s1", spool_path=tmp_path / "spool.sqlite",
                    client_key=keyring / "edge1.key_secret", server_key=keyring / "cloud.key",
                    heartbeat_s=0.2, heartbeat_misses=3, reconnect_min_s=0.05, reconnect_max_s=0.5,
                    ack_timeout_s=0.5).start()
    assert link.wait_ready(20), link.stats()
    emb = embeddings(N_BATCHES * DANCERS)
    submitted = []

    def stream():
        for i in range(N_BATCHES):   # ~ 300 windows/s for ~4 s
            ws = [codec.make_window(d, 0, i * 0.5, i * 0.5 + 2.0, emb[i * DANCERS + d], {"intensity": 1.0}, 0.9)
                  for d in range(DANCERS)]
            submitted.append(link.submit(ws))
            time.sleep(0.01)

    t = threading.Thread(target=stream)
    t.start()
    at_kill = []
    served = 0
    for fraction in (0.25, 0.6):
        # kill while windows are flowing (by submissions, not acks, so the stream is not over),
        # and only once the previous cloud instance has acked windows submitted after its start
        assert wait_until(lambda: len(submitted) >= fraction * N_BATCHES and link.acked_seq > served, 30)
        assert len(submitted) < N_BATCHES
        cloud.kill()
        served = len(submitted) * DANCERS
        at_kill.append((len(submitted) * DANCERS, link.acked_seq))
        time.sleep(0.3)          # the edge keeps spooling meanwhile
        cloud.start()
    t.join()
    assert all(s is not None for s in submitted)
    assert link.wait_acked(60), link.stats()
    for n_submitted, acked in at_kill:
        assert 0 < n_submitted < N_BATCHES * DANCERS and acked < N_BATCHES * DANCERS
    stats = link.stats()
    link.close()
    cloud.stop()

    rows = cloud.received()
    seqs = [s for _, s in rows]
    total = N_BATCHES * DANCERS
    assert len(seqs) == total, f"{len(seqs)} rows for {total} windows; duplicates={len(seqs) - len(set(seqs))}"
    assert sorted(seqs) == list(range(1, total + 1))
    assert {n for n, _ in rows} == {"studio-a"}
    assert stats["hellos"] >= 3 and stats["spool"]["batches"] == 0, repr(stats)


@pytest.mark.slow
def test_edge_restart_resumes_from_its_spool(tmp_path, cloud_process):
    """Windows spooled while the cloud is down and the edge then restarts are delivered once."""
    cloud = cloud_process(None)
    kw = dict(encoder_hash="enc-1", embedding_dim=64, node_id="studio-b", spool_path=tmp_path / "spool.sqlite",
              insecure_dev=True, heartbeat_s=0.2, reconnect_min_s=0.05, reconnect_max_s=0.3, ack_timeout_s=0.5)
    emb = embeddings(40)
    link = EdgeLink(cloud.endpoint, **kw).start()
    for i in range(20):
        link.submit([codec.make_window(1, 0, i, i + 2, emb[i])])
    link.close(flush_timeout=0.2)          # cloud not running: all 20 stay in the spool
    link = EdgeLink(cloud.endpoint, **kw)  # a new process would do the same
    assert link.spool.stats()["batches"] == 20
    cloud.start()
    link.start()
    for i in range(20, 40):
        link.submit([codec.make_window(1, 0, i, i + 2, emb[i])])
    assert link.wait_acked(30), link.stats()
    link.close()
    cloud.stop()
    assert sorted(s for _, s in cloud.received()) == list(range(1, 41))
