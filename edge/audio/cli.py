"""`dancewire audio analyze|devices|listen`: the causal audio path over a file or the mic."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file ([audio] table, see edge/audio/settings.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one audio setting, e.g. onset_threshold=0.2 (repeatable)")


def load_audio_settings(args):
    """The `audio` section of the edge settings (file -> $DANCEWIRE_EDGE_AUDIO__* -> --set)."""
    from edge.settings import load_edge_settings

    overrides = [o if o.startswith("audio.") else f"audio.{o}" for o in args.overrides]
    return load_edge_settings(args.config, overrides).audio.validate()


def register(sub: argparse._SubParsersAction) -> None:
    audio = sub.add_parser("audio", help="music analysis: onsets, beats, eight-counts (causal)")
    cmds = audio.add_subparsers(dest="audio_command", metavar="COMMAND")

    a = cmds.add_parser("analyze", help="run the live (causal) audio path over a file's audio, write JSON Lines",
                        description="Onsets and beats of an audio or video file's first audio stream, by the "
                                    "same causal code as live. Records: {type: onset|beat|summary, t, known_at, ...}.")
    a.add_argument("file", type=Path)
    a.add_argument("--out", default="-", help="output .jsonl (default: stdout)")
    a.add_argument("--block-size", type=int, default=1024, help="samples per block fed to the analyzer")
    _settings_args(a)
    a.set_defaults(func=_analyze)

    d = cmds.add_parser("devices", help="list the audio input devices PortAudio sees")
    d.set_defaults(func=_devices)

    li = cmds.add_parser("listen", help="live: analyse the microphone, write JSON Lines")
    li.add_argument("--out", default="-", help="output .jsonl (default: stdout)")
    li.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    li.add_argument("--device", default=None, help="input device index or name (default: audio.mic_device)")
    li.add_argument("--record", type=Path, default=None, metavar="WAV",
                    help="also save what the device delivered (mono 16-bit WAV at the device rate)")
    _settings_args(li)
    li.set_defaults(func=_listen)
    audio.set_defaults(func=lambda args: audio.print_help() or 2)


def analyze_file(path, out, settings=None, block_size: int = 1024) -> dict:
    """Write onset/beat records and a summary for `path` to `out` (a JsonlWriter); returns the summary."""
    from edge.audio.analyzer import AudioAnalyzer
    from edge.audio.settings import AudioSettings
    from edge.sources.audio_file import AudioFileSource

    settings = settings or AudioSettings()
    source = AudioFileSource(path, settings.sample_rate, block_size)
    analyzer = AudioAnalyzer(settings, settings.sample_rate)
    for block in source.blocks():
        for ev in analyzer.process(block):
            out.write(ev.to_json())
    for ev in analyzer.flush():
        out.write(ev.to_json())
    summary = analyzer.summary()
    summary["file"] = str(path)
    summary["corrupt_packets"] = source.corrupt_packets
    out.write(summary)
    return summary


def _analyze(args) -> int:
    from edge.records_io import JsonlWriter

    settings = load_audio_settings(args)
    with JsonlWriter(args.out, atomic=True) as out:
        summary = analyze_file(args.file, out, settings, args.block_size)
    print(f"{summary['onsets']} onsets, {summary['beats']} beats, {summary['bpm']} BPM, "
          f"{summary['duration_s']} s of audio", file=sys.stderr)
    return 0


def _devices(args) -> int:
    from edge.sources.mic import describe_devices, list_input_devices

    inputs = list_input_devices()
    if not inputs:
        print(f"no input devices ({describe_devices()})")
        return 1
    for d in inputs:
        print(f"{d['index']:3d}  {d['name']}  [{d['hostapi']}, {d['channels']} ch, {d['default_samplerate']:.0f} Hz]")
    return 0


def _listen(args) -> int:
    import time
    import wave

    import numpy as np

    from edge.audio.analyzer import AudioAnalyzer
    from edge.records_io import JsonlWriter
    from edge.sources.mic import MicSource

    settings = load_audio_settings(args)
    mic = MicSource(settings, device=args.device)
    analyzer = AudioAnalyzer(settings, settings.sample_rate)
    rec = None
    if args.record is not None:
        rec = wave.open(str(args.record), "wb")
        rec.setnchannels(1)
        rec.setsampwidth(2)
        rec.setframerate(mic.sample_rate)
    first_t = None
    start = time.monotonic()
    with JsonlWriter(args.out) as out:
        try:
            for block in mic.blocks():
                if first_t is None:
                    first_t = block.t
                    print(f"listening: {mic.device_name!r} at {mic.sample_rate} Hz, {mic.channels} ch",
                          file=sys.stderr, flush=True)
                if rec is not None:
                    rec.writeframes((np.clip(block.samples, -1, 1) * 32767).astype("<i2").tobytes())
                for ev in analyzer.process(block):
                    out.write(ev.to_json())
                if args.duration is not None and time.monotonic() - start >= args.duration:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            mic.stop()
            if rec is not None:
                rec.close()
        for ev in analyzer.flush():
            out.write(ev.to_json())
        summary = analyzer.summary()
        summary.update(device=mic.device_name, device_rate=mic.sample_rate, channels=mic.channels,
                       first_block_t=first_t, dropped_blocks=mic.dropped, overflows=mic.overflows,
                       fallback_stamps=mic.fallback_stamps, stamp_resyncs=mic.resyncs)
        out.write(summary)
    return 0
