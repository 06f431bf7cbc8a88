"""`dancewire models build`: the pose models, from the mediapipe wheel to verified ONNX files.

Steps (each cached, so an up-to-date cache costs one manifest read and a few hashes):

1. ``pip download --no-deps`` the ``mediapipe==0.10.21`` wheel (never installed; its sha256
   is pinned) into ``cache_dir()/downloads`` and unzip the two ``.tflite`` models, the
   wheel's LICENSE and the TFLite flatbuffer schema module.
2. Rewrite the detector's sparse fp16 weights (DENSIFY ops) as dense constants
   (``edge.models.densify``; needs only numpy + flatbuffers).
3. Create once, and reuse, an isolated build venv ``cache_dir()/build-venv`` with
   tensorflow-cpu + tf2onnx. Only this build step runs it; the runtime never imports
   TensorFlow or mediapipe.
4. tf2onnx ``--tflite --opset 17 --inputs-as-nchw``, with clear tensor names.
5. With ``onnx`` (edge.models.graph): the detector and the landmark model without its
   segmentation and heatmap branches get a dynamic batch dimension; the full landmark
   model is kept too (batch 1, all five outputs).
6. Compare every ONNX model with the original TFLite model on real images
   (edge.models.verify); the build fails outside the limits. Report: verification.json.
7. Record sha256, size, tensors, licence and attribution of every file in manifest.json.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancewire.errors import DancewireError, ModelCacheError
from dancewire.paths import cache_dir, shared_data_dir
from dancewire.progress import Progress
from edge.models import registry

log = logging.getLogger(__name__)

RECIPE = 1                      # bump when the steps below change what they produce
BUILD_NAME = "pose"             # this build's key in the manifest's "builds" table

MEDIAPIPE_VERSION = "0.10.21"
WHEEL = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
PIP_DOWNLOAD_ARGS = ("--no-deps", "--only-binary=:all:", "--python-version", "3.11",
                     "--platform", "manylinux_2_28_x86_64")
# file in the cache -> (member of the wheel, sha256 of that member)
WHEEL_MEMBERS = {
    "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                                  "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
    "LICENSE": (f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE",
                "8707eef0533987efc5b155d64761eeb6e20793f50b9bd1a68dad1cf4719d0ed8"),
}
SCHEMA_MEMBER = "mediapipe/tasks/metadata/schema_py_generated.py"

BUILD_REQUIREMENTS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
OPSET = 17
LANDMARK_KEEP = ["landmarks", "pose_flag", "world_landmarks"]

LICENSE_SPDX = "Apache-2.0"
ATTRIBUTION = ("BlazePose GHUM 3D (Google): pose detector and 'full' landmark model from the "
               f"MediaPipe {MEDIAPIPE_VERSION} Python wheel, Copyright The MediaPipe Authors, "
               "Apache License 2.0 (see LICENSE); converted to ONNX by dancewire")
MODEL_CARD = "BlazePose GHUM 3D model card (Google): https://developers.google.com/mediapipe/solutions/vision/pose_landmarker#models"

OUTPUT_FILES = ("pose_detector.onnx", "pose_landmarks.onnx", "pose_landmarks_full.onnx",
                "pose_detection.tflite", "pose_landmark_full.tflite", "LICENSE", "verification.json")
MODEL_NAMES = ("pose_detector", "pose_landmarks", "pose_landmarks_full")


@dataclass
class BuildResult:
    directory: Path
    rebuilt: bool
    seconds: float
    report: dict | None = None


def build_key() -> str:
    recipe = {"recipe": RECIPE, "wheel_sha256": WHEEL_SHA256, "requirements": BUILD_REQUIREMENTS,
              "opset": OPSET, "members": {k: v[1] for k, v in WHEEL_MEMBERS.items()},
              "landmark_outputs": LANDMARK_KEEP}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def _file_lock(path: Path):
    """One build at a time per cache (a second one waits, then finds the cache up to date)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another `dancewire models build` holds %s; waiting", path)
            print(f"waiting for another models build ({path})", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], log_file: Path, what: str, *, show: bool = False) -> str:
    """Run a command, its output into ``log_file`` (and as progress lines if ``show``)."""
    log.info("running %s", " ".join(map(str, cmd)))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    meter = Progress(f"  {what}", None, interval=3.0) if show else None
    lines: list[str] = []
    with open(log_file, "a") as logf:
        logf.write(f"$ {' '.join(map(str, cmd))}\n")
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, env=_clean_env(), bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            lines.append(line.rstrip())
            if meter is not None and line.strip():
                meter.update(1, line.strip()[:110])
        rc = proc.wait()
    if rc != 0:
        tail = " | ".join(l for l in lines[-3:] if l)[-300:]
        raise DancewireError(f"{what} failed (exit {rc}): {tail} (full log: {log_file})")
    return "\n".join(lines)


# ---------------------------------------------------------------- steps
def fetch_wheel(downloads: Path, log_file: Path) -> Path:
    """The mediapipe wheel, downloaded once with pip (no install) and checked by sha256."""
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / WHEEL
    if wheel.exists() and registry.sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        _run([sys.executable, "-m", "pip", "download", *PIP_DOWNLOAD_ARGS,
              f"mediapipe=={MEDIAPIPE_VERSION}", "--dest", tmp], log_file, "pip download mediapipe")
        got = Path(tmp) / WHEEL
        if not got.exists():
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise DancewireError(f"pip download of mediapipe=={MEDIAPIPE_VERSION} gave {found}, "
                                 f"expected {WHEEL}")
        digest = registry.sha256_file(got)
        if digest != WHEEL_SHA256:
            raise DancewireError(f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}; refusing it")
        os.replace(got, wheel)
    return wheel


def extract(wheel: Path, dest: Path) -> Path:
    """Unzip the models and LICENSE into ``dest`` (checked by sha256); returns the schema path."""
    with zipfile.ZipFile(wheel) as zf:
        for name, (member, sha) in WHEEL_MEMBERS.items():
            data = zf.read(member)
            if hashlib.sha256(data).hexdigest() != sha:
                raise DancewireError(f"{member} in {wheel.name} does not match its recorded sha256")
            (dest / name).write_bytes(data)
        schema = dest / "tflite_schema_py_generated.py"
        schema.write_bytes(zf.read(SCHEMA_MEMBER))
    return schema


def ensure_build_venv(path: Path, log_file: Path) -> Path:
    """The isolated TensorFlow + tf2onnx venv: created once, reused while its stamp matches."""
    python = path / "bin" / "python"
    stamp = path / ".dancewire-build-venv.json"
    want = {"requirements": list(BUILD_REQUIREMENTS),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    if python.exists() and stamp.exists():
        try:
            have = json.loads(stamp.read_text())
            if {k: have.get(k) for k in want} == want:
                return python
        except ValueError:
            pass
    if path.exists():
        shutil.rmtree(path)
    print(f"creating the build venv {path} (TensorFlow, ~1.6 GB; once)", file=sys.stderr, flush=True)
    try:
        _run([sys.executable, "-m", "venv", path], log_file, "create build venv")
        _run([python, "-m", "pip", "install", "--progress-bar", "off", *BUILD_REQUIREMENTS],
             log_file, "pip install " + " ".join(BUILD_REQUIREMENTS), show=True)
        versions = _run([python, "-c", "import tensorflow as tf, tf2onnx, onnx; "
                         "print(tf.__version__, tf2onnx.__version__, onnx.__version__)"],
                        log_file, "import tensorflow in the build venv").split()[-3:]
        freeze = _run([python, "-m", "pip", "freeze"], log_file, "pip freeze").splitlines()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    stamp.write_text(json.dumps({**want, "tensorflow": versions[0], "tf2onnx": versions[1],
                                 "onnx": versions[2], "freeze": freeze}, indent=1))
    return python


def build_venv_versions(path: Path) -> dict:
    try:
        stamp = json.loads((path / ".dancewire-build-venv.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: stamp.get(k) for k in ("tensorflow", "tf2onnx", "onnx")}


def convert(python: Path, tflite: Path, out: Path, outputs: dict[str, str], log_file: Path) -> None:
    """tf2onnx: NHWC->NCHW input named ``image``, outputs renamed per ``outputs``."""
    _run([python, "-m", "tf2onnx.convert", "--tflite", tflite, "--output", out, "--opset", str(OPSET),
          "--inputs", "input_1", "--inputs-as-nchw", "input_1", "--rename-inputs", "image",
          "--outputs", ",".join(outputs), "--rename-outputs", ",".join(outputs.values())],
         log_file, f"tf2onnx {tflite.name}")


def _finish_onnx(model, source: str, description: str):
    import onnx

    model.doc_string = f"{description}. {ATTRIBUTION}."
    props = {"source": f"mediapipe=={MEDIAPIPE_VERSION}:{source}", "license": LICENSE_SPDX,
             "attribution": ATTRIBUTION, "converter": f"dancewire models build (recipe {RECIPE}), "
             f"tf2onnx opset {OPSET}", "layout": "NCHW"}
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model, full_check=True)
    return model


def postprocess(det_raw: Path, lm_raw: Path, out: Path) -> None:
    import onnx

    from edge.models.graph import make_batch_dynamic, trim_outputs

    det = make_batch_dynamic(onnx.load(str(det_raw)))
    onnx.save(_finish_onnx(det, "pose_detection.tflite", registry.MODELS["pose_detector"].description),
              str(out / "pose_detector.onnx"))
    full = onnx.load(str(lm_raw))
    onnx.save(_finish_onnx(full, "pose_landmark_full.tflite",
                           registry.MODELS["pose_landmarks_full"].description),
              str(out / "pose_landmarks_full.onnx"))
    trimmed = make_batch_dynamic(trim_outputs(full, LANDMARK_KEEP))
    onnx.save(_finish_onnx(trimmed, "pose_landmark_full.tflite",
                           registry.MODELS["pose_landmarks"].description),
              str(out / "pose_landmarks.onnx"))


def tflite_reference(model: Path, x: np.ndarray, build_python: Path | None, names: dict[str, str],
                     work: Path) -> tuple[dict[str, np.ndarray], str]:
    """TFLite outputs for ``x`` (renamed to the ONNX names): in process via ai-edge-litert
    when the main venv has it, else with tf.lite in the build venv."""
    from edge.models import tflite_ref

    if tflite_ref.available():
        raw, label = tflite_ref.run(str(model), x)
    else:
        if build_python is None:
            raise DancewireError("no TFLite interpreter: pip install ai-edge-litert, or run "
                                 "`dancewire models build` to make the build venv")
        inp, outp = work / f"{model.stem}-in.npz", work / f"{model.stem}-ref.npz"
        np.savez(inp, x=x)
        _run([build_python, Path(tflite_ref.__file__), model, inp, outp], work / "reference.log",
             f"TFLite reference for {model.name}")
        with np.load(outp) as z:
            raw = {k: z[k] for k in z.files if k != "__interpreter__"}
            label = str(z["__interpreter__"])
    return {names[k]: v for k, v in raw.items()}, label


def verify_models(directory: Path, *, build_python: Path | None, work: Path,
                  data_dir: Path | None = None, images: list[Path] | None = None,
                  progress: Progress | None = None) -> dict:
    """The fidelity report of the ONNX models in ``directory`` vs their TFLite originals."""
    import onnxruntime

    from edge.models import verify as V

    inputs = V.collect_inputs(data_dir, images)
    if progress:
        progress.update(0, f"verifying on {len(inputs.detector)} images / {len(inputs.landmarks)} "
                           f"person crops ({inputs.kind})")
    ref_det, label = tflite_reference(directory / "pose_detection.tflite", inputs.detector, build_python,
                                      V.DETECTOR_OUTPUTS, work)
    ref_lm, _ = tflite_reference(directory / "pose_landmark_full.tflite", inputs.landmarks, build_python,
                                 V.LANDMARK_OUTPUTS, work)
    det_run = V.ort_runner(directory / "pose_detector.onnx")
    lm_run = V.ort_runner(directory / "pose_landmarks.onnx")
    full_run = V.ort_runner(directory / "pose_landmarks_full.onnx")
    det_out = det_run(inputs.detector)
    lm_out = lm_run(inputs.landmarks)
    full_out = full_run(inputs.landmarks)
    batch_x, det_batch_x = V.distinct_batch(inputs.landmarks), V.distinct_batch(inputs.detector)
    report = {
        "inputs": {"kind": inputs.kind,
                   "note": ("real images: COCO val people and dance video frames from the shared data"
                            if inputs.kind == "real" else
                            "NO REAL IMAGES WERE FOUND: synthetic patterns only; rerun with shared data"),
                   "detector_images": inputs.detector_sources, "landmark_crops": inputs.landmark_sources},
        "reference": label,
        "onnxruntime": onnxruntime.__version__,
        "units": {"detector": "224-px letterboxed input pixels", "landmarks": "256-px crop pixels",
                  "world_landmarks": "metres"},
        "limits": V.LIMITS,
        "detector": V.compare_detector(det_out, ref_det),
        "landmarks": {"pose_landmarks": V.compare_landmarks(lm_out, ref_lm),
                      "pose_landmarks_full": V.compare_landmarks(full_out, ref_lm)},
        "trimmed_vs_full_max_abs_diff": {k: float(np.abs(lm_out[k] - full_out[k]).max()) for k in lm_out},
        "batch": {"pose_landmarks": V.batch_consistency(lm_run, batch_x),
                  "pose_detector": V.batch_consistency(det_run, det_batch_x)},
    }
    failures = V.check_limits(report)
    report["passed"] = not failures
    report["failures"] = failures
    return report


def _model_entries(directory: Path) -> dict:
    import onnx

    from edge.models.graph import tensor_specs

    common = {"license": LICENSE_SPDX, "license_file": "LICENSE", "attribution": ATTRIBUTION,
              "layout": "NCHW"}
    det_pre = ("RGB, letterboxed to 224x224 (aspect kept, centred, zero border), scaled to [-1, 1]; "
               "boxes are x, y, w, h then 4 keypoints (x, y) in 224-px units relative to the SSD anchor; "
               "scores are logits")
    lm_pre = ("RGB crop (rotated square ROI) resized to 256x256, scaled to [0, 1]; landmarks = 39 x "
              "(x, y, z, visibility logit, presence logit) in crop pixels; pose_flag is a probability")
    sources = {"pose_detector": ("pose_detection.tflite", det_pre, "dynamic"),
               "pose_landmarks": ("pose_landmark_full.tflite", lm_pre, "dynamic"),
               "pose_landmarks_full": ("pose_landmark_full.tflite", lm_pre + "; segmentation logits "
                                       "(1,256,256,1), heatmap (1,64,64,39)", 1)}
    entries = {}
    for name in MODEL_NAMES:
        info = registry.MODELS[name]
        model = onnx.load(str(directory / info.file), load_external_data=False)
        source, pre, batch = sources[name]
        entries[name] = {"file": info.file, "description": info.description, "source": source,
                         "source_package": f"mediapipe=={MEDIAPIPE_VERSION}", "batch": batch,
                         "opset": OPSET, "io": pre, **tensor_specs(model), **common}
    return entries


def _up_to_date(directory: Path) -> bool:
    try:
        manifest = registry.read_manifest(directory)
        b = manifest.get("builds", {}).get(BUILD_NAME, {})
        if b.get("build_key") != build_key() or not b.get("verification", {}).get("passed"):
            return False
        for file in OUTPUT_FILES:
            record = manifest["files"].get(file)
            if record is None:
                return False
            registry.verify_file(directory / file, record["sha256"], record.get("size"))
        for name in MODEL_NAMES:
            if manifest.get("models", {}).get(name, {}).get("file") != registry.MODELS[name].file:
                return False
        return True
    except ModelCacheError:
        return False


def build(force: bool = False, *, data_dir: Path | None = None, images: list[Path] | None = None,
          cache: Path | None = None) -> BuildResult:
    """Build (or find up to date) the pose models in ``cache/models``."""
    t0 = time.monotonic()
    cache = Path(cache) if cache is not None else cache_dir()
    directory = cache / "models"
    logs = cache / "build-logs"
    with _file_lock(cache / ".models-build.lock"):
        if not force and _up_to_date(directory):
            return BuildResult(directory, False, time.monotonic() - t0)
        for stale in cache.glob(".models-build-*"):      # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        bar = Progress("models build", total=7, interval=0.0)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        log_file = logs / f"build-{stamp}.log"
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".models-build-") as tmp:
            work = Path(tmp)
            out = work / "out"
            out.mkdir()
            bar.step(f"fetching mediapipe=={MEDIAPIPE_VERSION} wheel (no install)")
            wheel = fetch_wheel(cache / "downloads", log_file)
            schema_path = extract(wheel, out)

            bar.step("densifying the detector's sparse weights")
            from edge.models.densify import densify_model, load_schema

            det_dense = work / "pose_detection_dense.tflite"
            n = densify_model(out / "pose_detection.tflite", det_dense, load_schema(schema_path))
            log.info("densified %d sparse tensors", n)
            schema_path.unlink()

            bar.step("build venv (TensorFlow + tf2onnx, isolated, cached)")
            venv = cache / "build-venv"
            python = ensure_build_venv(venv, log_file)

            bar.step(f"converting to ONNX (tf2onnx, opset {OPSET}, NCHW)")
            det_raw, lm_raw = work / "det_raw.onnx", work / "lm_raw.onnx"
            from edge.models.verify import DETECTOR_OUTPUTS, LANDMARK_OUTPUTS

            convert(python, det_dense, det_raw, DETECTOR_OUTPUTS, log_file)
            convert(python, out / "pose_landmark_full.tflite", lm_raw, LANDMARK_OUTPUTS, log_file)

            bar.step("trimming landmark outputs, dynamic batch")
            postprocess(det_raw, lm_raw, out)

            bar.step("verifying ONNX against TFLite (real images when available)")
            report = verify_models(out, build_python=python, work=work,
                                   data_dir=data_dir if data_dir is not None else shared_data_dir(),
                                   images=images, progress=bar)
            (out / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
            if not report["passed"]:
                kept = logs / f"verification-failed-{stamp}.json"
                shutil.copy(out / "verification.json", kept)
                raise DancewireError("converted models fail verification: " + "; ".join(report["failures"])
                                     + f" (report: {kept})")

            bar.step("writing the cache and its manifest")
            try:
                manifest = registry.read_manifest(directory)
            except ModelCacheError:
                manifest = {"format": registry.MANIFEST_FORMAT, "files": {}, "models": {}, "builds": {}}
            for file in OUTPUT_FILES:
                os.replace(out / file, directory / file)
            manifest.setdefault("models", {}).update(_model_entries(directory))
            manifest.setdefault("files", {}).update({f: registry.file_record(directory / f) for f in OUTPUT_FILES})
            venv_versions = build_venv_versions(venv)
            tools = {"tensorflow-cpu": venv_versions.get("tensorflow"), "tf2onnx": venv_versions.get("tf2onnx"),
                     "onnx_in_build_venv": venv_versions.get("onnx")}
            import onnx

            manifest.setdefault("builds", {})[BUILD_NAME] = {
                "build_key": build_key(), "recipe": RECIPE,
                "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": "dancewire models build",
                "source": {"package": "mediapipe", "version": MEDIAPIPE_VERSION, "wheel": WHEEL,
                           "wheel_sha256": WHEEL_SHA256, "index": "PyPI (pip download --no-deps)",
                           "members": {k: {"path": m, "sha256": s} for k, (m, s) in WHEEL_MEMBERS.items()}},
                "license": {"spdx": LICENSE_SPDX, "file": "LICENSE"},
                "attribution": ATTRIBUTION, "model_card": MODEL_CARD,
                "files": list(OUTPUT_FILES),
                "tools": {**tools, "onnx_postprocess": onnx.__version__, "opset": OPSET,
                          "python": sys.version.split()[0], "densified_tensors": n},
                "verification": {"file": "verification.json", "passed": True,
                                 "inputs": report["inputs"]["kind"], "reference": report["reference"],
                                 "landmark_xy_max_abs_diff_px":
                                     report["landmarks"]["pose_landmarks"]["xy_max_abs_diff_px"],
                                 "detector_box_max_abs_diff_px":
                                     report["detector"]["box_max_abs_diff_px_confident"],
                                 "detector_score_max_abs_diff": report["detector"]["score_max_abs_diff"],
                                 "batch_vs_single_max_abs_diff":
                                     report["batch"]["pose_landmarks"]["overall"]},
            }
            registry.write_manifest(directory, manifest)
            registry.clear_verified()
            bar.update(0, f"done: {directory}")
    return BuildResult(directory, True, time.monotonic() - t0, report)
