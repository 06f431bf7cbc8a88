"""Microphone source: device errors, ADC-time stamping, and a real InputStream fed through a
PulseAudio null sink (a virtual microphone) compared with the file path."""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
from audio_signals import SR, drum_track, write_wav

from dancewire.errors import DeviceError
from edge.audio.settings import AudioSettings
from edge.sources.clock import RigClock

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- a fake PortAudio
class _FakeSD(types.ModuleType):
    """Just enough of `sounddevice` for MicSource without a sound card."""

    def __init__(self, devices, default_input=-1):
        super().__init__("sounddevice")
        self._devices = devices
        self.default = types.SimpleNamespace(device=[default_input, -1])
        self.opened = []

    def query_devices(self, device=None, kind=None):
        if device is None:
            return list(self._devices)
        return self._devices[int(device)]

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def InputStream(self, **kw):  # noqa: N802 - sounddevice's name
        self.opened.append(kw)
        return types.SimpleNamespace(start=lambda: None, stop=lambda: None, close=lambda: None, latency=0.01)


def _dev(name, inputs, outputs=2):
    return {"name": name, "hostapi": 0, "max_input_channels": inputs, "max_output_channels": outputs,
            "default_samplerate": 48000.0}


@pytest.fixture
def fake_sd(monkeypatch):
    def install(devices, default_input=-1):
        fake = _FakeSD(devices, default_input)
        monkeypatch.setitem(sys.modules, "sounddevice", fake)
        return fake
    return install


def test_no_input_device_lists_the_devices(fake_sd):
    from edge.sources.mic import MicSource

    fake_sd([_dev("HDMI 0", 0), _dev("Speakers", 0)])
    with pytest.raises(DeviceError) as err:
        MicSource(AudioSettings())
    msg = str(err.value)
    assert "no audio input device" in msg and "HDMI 0" in msg and "Speakers" in msg
    fake_sd([])
    with pytest.raises(DeviceError, match="no audio devices at all"):
        MicSource(AudioSettings())


def test_unknown_device_name_lists_the_devices(fake_sd):
    from edge.sources.mic import MicSource

    fake_sd([_dev("USB Mic", 1)], default_input=0)
    with pytest.raises(DeviceError, match="'USB Mic'"):
        MicSource(AudioSettings(), device="Shure")
    assert MicSource(AudioSettings(), device="usb").device == 0
    assert MicSource(AudioSettings()).device == 0


def test_real_portaudio_without_input_device_errors_clearly():
    """On a machine with no sound card (CI), asking for the mic names what PortAudio sees."""
    sd = pytest.importorskip("sounddevice", reason="sounddevice/PortAudio not installed")
    from edge.sources.mic import MicSource, list_input_devices

    if list_input_devices():
        pytest.skip(f"this machine has an input device: {sd.query_devices()}")
    with pytest.raises(DeviceError, match="no audio input device"):
        MicSource(AudioSettings())


def test_callback_stamps_adc_time_on_the_rig_clock(fake_sd, monkeypatch):
    import edge.sources.mic as mic_mod

    fake_sd([_dev("USB Mic", 2)], default_input=0)
    clock = RigClock(origin=1000.0)
    mic = mic_mod.MicSource(AudioSettings(mic_channels=2, mic_offset_s=0.002), clock=clock)
    assert mic.channels == 2
    mic.start()
    monkeypatch.setattr(mic_mod.time, "monotonic", lambda: 1010.0)
    frames = 256
    data = np.stack([np.full(frames, 0.5, np.float32), np.full(frames, -0.1, np.float32)], axis=1)
    ti = types.SimpleNamespace(inputBufferAdcTime=55.980, currentTime=56.000)
    mic._callback(data, frames, ti, None)
    block = mic.queue.get(timeout=1)
    # captured 20 ms before the callback ran, on the rig clock (origin 1000), plus the offset
    assert block.t == pytest.approx(10.0 - 0.020 + 0.002, abs=1e-9)
    assert block.samples.shape == (frames,) and block.samples[0] == pytest.approx(0.2)
    mic.stop()
    # a host API that reports no ADC time: fall back to the stream's input latency
    mic = mic_mod.MicSource(AudioSettings(), clock=clock).start()
    mic._callback(data[:, :1], frames, types.SimpleNamespace(inputBufferAdcTime=0.0, currentTime=0.0), None)
    block = mic.queue.get(timeout=1)
    assert block.t == pytest.approx(10.0 - 0.01 - frames / SR, abs=1e-9)
    assert mic.fallback_stamps == 1
    mic.stop()


def test_stamps_follow_the_sample_clock_not_the_jitter(fake_sd, monkeypatch):
    import edge.sources.mic as mic_mod

    fake_sd([_dev("USB Mic", 1)], default_input=0)
    mic = mic_mod.MicSource(AudioSettings(), clock=RigClock(origin=0.0))
    frames = 256
    dt = frames / SR
    rng = np.random.default_rng(0)
    now = [100.0]
    monkeypatch.setattr(mic_mod.time, "monotonic", lambda: now[0])
    ts = []
    for i in range(200):
        now[0] = 100.0 + i * dt + 0.004 + rng.uniform(0, 0.003)      # callbacks run late, jittery
        adc = i * dt + (0.3 if 80 <= i < 90 else 0.0) + rng.uniform(-0.002, 0.002)   # + a bogus 300 ms step
        mic._callback(np.zeros((frames, 1), np.float32), frames,
                      types.SimpleNamespace(inputBufferAdcTime=adc + 50.0, currentTime=now[0] - 100.0 + 50.0), None)
        ts.append(mic.queue.get(timeout=1).t)
    steps = np.diff(ts)
    assert np.all(np.abs(steps - dt) <= 5e-4 * dt + 1e-12)            # never faster than 500 ppm off
    assert mic.resyncs == 0
    # samples lost (PortAudio says so): jump to the ADC time
    now[0] += 1.0
    mic._callback(np.zeros((frames, 1), np.float32), frames,
                  types.SimpleNamespace(inputBufferAdcTime=now[0] - 100.0 + 50.0 - 0.005, currentTime=now[0] - 100.0 + 50.0),
                  types.SimpleNamespace(input_overflow=True))
    assert mic.queue.get(timeout=1).t == pytest.approx(now[0] - 0.005, abs=1e-9)
    assert mic.resyncs == 1 and mic.overflows == 1


def test_bounded_queue_drops_oldest(fake_sd):
    from edge.sources.mic import MicSource

    fake_sd([_dev("USB Mic", 1)], default_input=0)
    mic = MicSource(AudioSettings(mic_queue_blocks=3))
    ti = types.SimpleNamespace(inputBufferAdcTime=1.0, currentTime=1.001)
    for i in range(5):
        mic._callback(np.full((64, 1), i / 10, np.float32), 64, ti, None)
    assert mic.dropped == 2
    assert [round(float(mic.queue.get(timeout=1).samples[0]), 2) for _ in range(3)] == [0.2, 0.3, 0.4]


# ---------------------------------------------------------------------- PulseAudio virtual microphone
def _pulse_env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(XDG_RUNTIME_DIR=str(root / "rt"), HOME=str(root / "home"),
               PULSE_SERVER=f"unix:{root / 'rt' / 'pulse' / 'native'}", PULSE_SINK="dwtest",
               PULSE_SOURCE="dwtest.monitor")
    env.pop("PULSE_COOKIE", None)
    return env


@pytest.fixture(scope="module")
def pulse():
    """A private PulseAudio daemon with a null sink `dwtest`; its monitor is the virtual mic."""
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install pulseaudio pulseaudio-utils); "
                        "scripts/system-deps.sh installs it")
    pytest.importorskip("sounddevice", reason="sounddevice/PortAudio not installed")
    root = Path(tempfile.mkdtemp(prefix="dwpa"))      # short: unix socket paths are limited
    (root / "rt").mkdir(mode=0o700)
    (root / "home").mkdir()
    env = _pulse_env(root)
    log = open(root / "pulse.log", "w")
    proc = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--system=false", "-n", "--exit-idle-time=-1", "--disallow-exit",
         "--use-pid-file=no", "--log-target=stderr",
         f"--load=module-null-sink sink_name=dwtest rate={SR} channels=1",
         "--load=module-native-protocol-unix auth-anonymous=1"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pulseaudio exited with {proc.returncode}: {(root / 'pulse.log').read_text()[-2000:]}")
            ok = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=10).returncode == 0
            if ok:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"pulseaudio did not come up: {(root / 'pulse.log').read_text()[-2000:]}")
            time.sleep(0.2)
        subprocess.run(["pactl", "set-default-source", "dwtest.monitor"], env=env, capture_output=True, timeout=10)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def known_wav(tmp_path_factory):
    x, _, onsets = drum_track(120.0, seconds=6.0, start=0.6)
    return write_wav(tmp_path_factory.mktemp("vmic") / "known.wav", x), x, onsets


def _record(env, wav: Path, out_dir: Path, overrides: list[str], seconds: float) -> tuple[list[dict], np.ndarray, int]:
    """`dancewire audio listen` on the virtual mic while `paplay` plays `wav` into the sink."""
    jsonl, rec = out_dir / "live.jsonl", out_dir / "rec.wav"
    cmd = [sys.executable, "-m", "dancewire", "audio", "listen", "--device", "pulse", "--duration", str(seconds),
           "--out", str(jsonl), "--record", str(rec)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "listening" not in line:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"listen did not start: rc={proc.poll()} {line} {proc.stderr.read() if proc.poll() is not None else ''}")
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                line = proc.stderr.readline()
        subprocess.run(["paplay", "--device=dwtest", str(wav)], env=env, check=True, timeout=60,
                       stdin=subprocess.DEVNULL, capture_output=True)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    recs = [json.loads(x) for x in jsonl.read_text().splitlines()]
    import wave

    with wave.open(str(rec)) as w:
        rate = w.getframerate()
        y = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767
    return recs, y, rate


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["mic_channels=2"], ["mic_sample_rate=48000"]],
                         ids=["mono-44k", "stereo-44k", "mono-48k-resampled"])
def test_virtual_mic_gives_the_file_onsets(pulse, known_wav, tmp_path, overrides):
    from scipy.signal import correlate

    from edge.audio.analyzer import AudioAnalyzer, StreamResampler
    from edge.sources.audio_file import AudioFileSource

    wav, x, _ = known_wav
    settings = AudioSettings()
    hop_s = settings.onset_hop / SR
    # the file path
    an = AudioAnalyzer(settings)
    file_on = []
    for b in AudioFileSource(wav, SR).blocks():
        file_on += [e.t for e in an.process(b) if type(e).__name__ == "Onset"]
    file_on = np.array(file_on)

    recs, y, rate = _record(pulse, wav, tmp_path, overrides, seconds=x.size / SR + 2.5)
    summary = recs[-1]
    assert summary["type"] == "summary" and summary["device_rate"] == rate
    assert summary["dropped_blocks"] == 0 and summary["clock_reanchors"] == 0, summary
    if rate != SR:
        assert summary["resampled_from"] == rate
        r = StreamResampler(rate, SR)
        y = np.concatenate([r(y), r.flush()])
    # where the file's first sample lies in the recording (the first ~10 ms may be lost)
    c = correlate(y, x, mode="full", method="fft")
    lag = int(np.argmax(c)) - (x.size - 1)
    assert 0 <= lag < y.size - x.size // 2, lag
    t_file0 = summary["first_block_t"] + lag / SR        # rig time of the file's t=0
    live_on = np.array([r["t"] for r in recs if r["type"] == "onset"]) - t_file0
    lo, hi = 0.4, x.size / SR - 0.3
    f = file_on[(file_on > lo) & (file_on < hi)]
    g = live_on[(live_on > lo - hop_s) & (live_on < hi + hop_s)]
    assert len(f) >= 10
    assert len(g) == len(f), (f, g)
    assert np.max(np.abs(g - f)) <= hop_s + 1e-4, np.abs(g - f)
