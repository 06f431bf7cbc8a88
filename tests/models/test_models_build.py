"""The build's pieces (densify, graph edits), its manifest, its cache, and its CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.models import registry
from edge.models.densify import densify_values
from edge.models.graph import make_batch_dynamic, tensor_specs, trim_outputs


# ---------------------------------------------------------------- densify (TFLite sparsity)
class _Vec:
    def __init__(self, values):
        self.values = np.asarray(values)


class _Dim:
    def __init__(self, fmt, dense_size=0, segments=None, indices=None):
        self.format, self.denseSize = fmt, dense_size
        self.arraySegments = _Vec(segments) if segments is not None else None
        self.arrayIndices = _Vec(indices) if indices is not None else None


class _Sparsity:
    def __init__(self, traversal, block_map, dims):
        self.traversalOrder, self.blockMap, self.dimMetadata = traversal, block_map, dims


def test_densify_csr_matrix():
    dense = np.array([[1, 0, 0, 0], [0, 0, 2, 3], [0, 0, 0, 0], [4, 0, 0, 5]], np.float32)
    sp = _Sparsity([0, 1], [], [_Dim(0, 4), _Dim(1, segments=[0, 1, 3, 3, 5], indices=[0, 2, 3, 0, 3])])
    out = densify_values(np.array([1, 2, 3, 4, 5], np.float32), (4, 4), sp)
    np.testing.assert_array_equal(out, dense)


def test_densify_block_sparse_matrix():
    """2x2 blocks of a 4x4 matrix (TFLite's documented block-sparse layout, BCSR)."""
    dense = np.array([[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]], np.float16)
    sp = _Sparsity([0, 1, 2, 3], [0, 1],
                   [_Dim(0, 2), _Dim(1, segments=[0, 1, 2], indices=[0, 1]), _Dim(0, 2), _Dim(0, 2)])
    out = densify_values(np.arange(1, 9, dtype=np.float16), (4, 4), sp)
    np.testing.assert_array_equal(out, dense)


def test_densify_permuted_traversal():
    """Column-major traversal (traversal order [1, 0])."""
    dense = np.array([[0, 7], [8, 0], [0, 9]], np.float32)
    sp = _Sparsity([1, 0], [], [_Dim(0, 2), _Dim(1, segments=[0, 1, 3], indices=[1, 0, 2])])
    out = densify_values(np.array([8, 7, 9], np.float32), (3, 2), sp)
    np.testing.assert_array_equal(out, dense)


def test_densified_detector_runs_like_the_sparse_one(built_models, tmp_path):
    """The real detector, densified here, gives bit-identical TFLite outputs."""
    pytest.importorskip("ai_edge_litert")
    from dancewire.paths import cache_dir
    from edge.models import build, tflite_ref
    from edge.models.densify import densify_model, load_schema

    wheel = cache_dir() / "downloads" / build.WHEEL
    if not wheel.exists():
        pytest.skip("the mediapipe wheel is not in the download cache")
    with zipfile.ZipFile(wheel) as zf:
        (tmp_path / "schema.py").write_bytes(zf.read(build.SCHEMA_MEMBER))
    dense = tmp_path / "dense.tflite"
    assert densify_model(built_models / "pose_detection.tflite", dense, load_schema(tmp_path / "schema.py")) == 38
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    a, _ = tflite_ref.run(str(built_models / "pose_detection.tflite"), x)
    b, _ = tflite_ref.run(str(dense), x)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ---------------------------------------------------------------- graph edits
def _tiny_model():
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 48])
    z = helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, 3, 4, 4])
    shape = numpy_helper.from_array(np.array([1, 48], np.int64), "shape")
    nodes = [helper.make_node("Relu", ["image"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["flat"]),
             helper.make_node("Sigmoid", ["image"], ["other"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y, z], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_make_batch_dynamic_and_trim():
    import onnxruntime as ort

    model = make_batch_dynamic(trim_outputs(_tiny_model(), ["flat"]))
    specs = tensor_specs(model)
    assert specs["inputs"][0]["shape"] == ["batch", 3, 4, 4]
    assert [o["name"] for o in specs["outputs"]] == ["flat"]
    assert specs["outputs"][0]["shape"] == ["batch", 48]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 3, 4, 4)).astype(np.float32)
    (flat,) = sess.run(None, {"image": x})
    np.testing.assert_array_equal(flat, np.maximum(x, 0).reshape(5, 48))


def test_trim_unknown_output():
    with pytest.raises(ValueError):
        trim_outputs(_tiny_model(), ["nope"])


# ---------------------------------------------------------------- manifest and cache
def test_manifest_records_every_file(built_models):
    manifest = registry.read_manifest(built_models)
    build = manifest["builds"]["pose"]
    for file in build["files"]:
        record = manifest["files"][file]
        assert registry.sha256_file(built_models / file) == record["sha256"]
        assert (built_models / file).stat().st_size == record["size"]
    assert build["license"]["spdx"] == "Apache-2.0"
    assert "BlazePose GHUM 3D" in build["attribution"] and "Google" in build["attribution"]
    assert build["source"]["package"] == "mediapipe" and build["source"]["version"] == "0.10.21"
    assert "Apache License" in (built_models / "LICENSE").read_text()
    assert build["verification"]["passed"]
    for name in ("pose_detector", "pose_landmarks"):
        entry = manifest["models"][name]
        assert entry["license"] == "Apache-2.0" and entry["inputs"][0]["name"] == "image"
    det = manifest["models"]["pose_detector"]
    assert [o["name"] for o in det["outputs"]] == ["boxes", "scores"]
    assert det["inputs"][0]["shape"][1:] == [3, 224, 224]
    onnx_meta = {p.key: p.value for p in onnx.load(str(built_models / "pose_detector.onnx")).metadata_props}
    assert onnx_meta["license"] == "Apache-2.0" and "BlazePose" in onnx_meta["attribution"]


def test_verification_report(built_models, shared_data):
    report = json.loads((built_models / "verification.json").read_text())
    assert report["passed"], report["failures"]
    assert report["inputs"]["kind"] == "real"
    assert report["landmarks"]["pose_landmarks"]["xy_max_abs_diff_px"] <= 0.5
    assert report["batch"]["pose_landmarks"]["overall"] <= 1e-3


def test_second_build_is_fast(built_models):
    """An up-to-date cache is recognised from the manifest and hashes: no work, seconds."""
    from edge.models.build import build

    t0 = time.monotonic()
    result = build(cache=built_models.parent)
    assert not result.rebuilt
    assert time.monotonic() - t0 < 10


def test_runtime_imports_no_tensorflow(built_models):
    """Opening the models at run time pulls in neither TensorFlow nor mediapipe."""
    code = ("import sys\n"
            "from edge.models.registry import model_path\n"
            "from edge.engines import open_engine\n"
            "for n in ('pose_detector', 'pose_landmarks'):\n"
            "    open_engine(model_path(n), 'onnxruntime')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'mediapipe', 'tf2onnx', 'keras')]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_cli_has_models_commands():
    from dancewire.cli import build_parser

    parser = build_parser()
    for argv in (["models", "build", "--force"], ["models", "info"], ["models", "verify", "--hashes-only"]):
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_models_verify_checks_the_files_against_the_manifest(built_models, tmp_path):
    """`dancewire models verify --hashes-only` on a copy of the cache: 0 as built, an error once a
    model file is changed by one byte."""
    import os
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(built_models, cache / "models")
    env = dict(os.environ, DANCEWIRE_CACHE=str(cache))
    cmd = [sys.executable, "-m", "dancewire", "models", "verify", "--hashes-only"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "hashes OK" in ok.stdout, ok.stderr
    target = cache / "models" / "pose_landmarks.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "pose_landmarks" in bad.stderr, (bad.stdout, bad.stderr)
