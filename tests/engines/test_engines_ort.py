"""ONNX Runtime engine on tiny models built here with onnx.helper: specs, threads, batching, errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dancewire.errors import ModelCacheError
from edge.engines import open_engine
from edge.engines.ort import OrtEngine

sys.path.insert(0, str(Path(__file__).parent))
from tiny_onnx_rig import affine_model  # noqa: E402


@pytest.fixture
def dynamic_model(tmp_path):
    return affine_model(tmp_path / "dyn.onnx")


@pytest.fixture
def fixed_model(tmp_path):
    return affine_model(tmp_path / "fixed.onnx", batch=1)


def test_specs_and_results(dynamic_model):
    eng = open_engine(dynamic_model, "onnxruntime", threads=1)
    assert isinstance(eng, OrtEngine) and eng.backend == "onnxruntime"
    assert [s.name for s in eng.inputs] == ["x"]
    assert eng.inputs[0].shape == (None, 3) and eng.inputs[0].dtype == np.float32
    assert [s.name for s in eng.outputs] == ["y", "s"]
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = eng.run({"x": x})
    np.testing.assert_allclose(out["y"], x * 2 + 1)
    np.testing.assert_allclose(out["s"], x.sum(1, keepdims=True))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_setting_is_honoured(dynamic_model, threads):
    eng = open_engine(dynamic_model, "onnxruntime", threads=threads)
    opts = eng._sess.get_session_options()
    assert opts.intra_op_num_threads == threads
    assert eng.threads == threads


def test_run_batched_chunks_fixed_batch_model(fixed_model):
    eng = OrtEngine(fixed_model)
    assert eng.max_batch == 1
    calls = []
    real_run = eng.run
    eng.run = lambda feeds: calls.append(len(feeds["x"])) or real_run(feeds)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    out = eng.run_batched("x", x)
    assert calls == [1, 1, 1, 1, 1]
    np.testing.assert_allclose(out["y"], x * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(out["s"][:, 0], x.sum(1), rtol=1e-5)


def test_run_batched_chunks_dynamic_batch_in_max_batch_steps(dynamic_model):
    eng = OrtEngine(dynamic_model)
    assert eng.max_batch == 64   # symbolic batch: the interface's default chunk
    calls = []
    real_run = eng.run
    eng.run = lambda feeds: calls.append(len(feeds["x"])) or real_run(feeds)
    x = np.random.default_rng(1).normal(size=(130, 3)).astype(np.float32)
    out = eng.run_batched("x", x)
    assert calls == [64, 64, 2]
    np.testing.assert_allclose(out["y"], x * 2 + 1, rtol=1e-6)   # order kept across chunks


def test_run_batched_empty_batch_gives_empty_outputs(dynamic_model):
    eng = OrtEngine(dynamic_model)
    out = eng.run_batched("x", np.zeros((0, 3), np.float32))
    assert out["y"].shape == (0, 3) and out["s"].shape == (0, 1)


def test_corrupt_file_is_a_model_cache_error(tmp_path, dynamic_model):
    bad = tmp_path / "corrupt.onnx"
    data = dynamic_model.read_bytes()
    bad.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 8)
    with pytest.raises(ModelCacheError, match="cannot load ONNX model"):
        OrtEngine(bad)


def test_missing_file_is_a_model_cache_error(tmp_path):
    with pytest.raises(ModelCacheError):
        OrtEngine(tmp_path / "nope.onnx")


def test_context_manager_and_unknown_backend(dynamic_model):
    with open_engine(dynamic_model) as eng:
        assert eng.run({"x": np.ones((1, 3), np.float32)})["y"].tolist() == [[3.0, 3.0, 3.0]]
    with pytest.raises(ValueError, match="unknown backend"):
        open_engine(dynamic_model, "tflite")


def test_warm_up_runs_every_input_at_batch_one(dynamic_model, fixed_model):
    for path in (dynamic_model, fixed_model):
        eng = open_engine(path, "onnxruntime", threads=1)
        seen = []
        run = eng.run
        eng.run = lambda feeds: seen.append({k: v.shape for k, v in feeds.items()}) or run(feeds)
        eng.warm_up()
        assert seen == [{"x": (1, 3)}]


def test_a_closed_engine_lets_its_session_go_and_refuses_to_run(dynamic_model):
    """close() did nothing: the session (its memory, its threads) stayed, and run() still worked."""
    eng = OrtEngine(dynamic_model, threads=1)
    x = np.ones((2, 3), np.float32)
    assert eng.run({"x": x})["y"].shape == (2, 3)
    eng.close()
    assert eng._sess is None
    with pytest.raises(RuntimeError, match="closed"):
        eng.run({"x": x})
    eng.close()                                       # twice is fine
