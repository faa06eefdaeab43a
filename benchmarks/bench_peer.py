"""Side-by-side CPU benchmark: stemflow against audio-separator on the same weights and input.

Both tools load the same checkpoint (random weights, ``torch.manual_seed``,
``torch.save(model.state_dict())`` in the community's key layout) and separate
the same generated stereo signal, each in its own subprocess, so that wall
time and peak RSS (``os.wait4`` rusage of that child alone) belong to one tool.

Cases (the documented run; ``--quick`` shrinks every case):

- ``forward``: one chunk of a real-size config (4-stem BS-RoFormer dim 384 /
  depth 8, 11 s chunk; vocals Mel-Band-RoFormer dim 384 / depth 6, 8 s chunk)
  through each tool's model class directly (ours: ``stemflow.models``; theirs:
  ``audio_separator.separator.uvr_lib_v5.roformer``), ``--repeats`` timed
  forwards; the two outputs must agree to ~1e-5.
- ``e2e``: a 60 s file through each tool's whole path (load model, decode,
  chunked overlap-add, write float WAVs), mid-size 4-stem BS-RoFormer
  (``benchmarks/configs/bs_roformer_mid.yaml``). Run at ``num_overlap`` 2 (the
  timed comparison) and 1 (the equivalence check: with one window per sample
  both tools' windows divide out, so outside audio-separator's realigned tail
  chunk the stems must agree to float precision once our model, too, skips the
  DC-bin zeroing that audio-separator's copy of the Roformer code drops).

audio-separator lives in its own virtualenv (``benchmarks/peer_setup.sh``) and
runs offline: ``MDXCSeparator(common_config, arch_config)`` on a local
checkpoint, ``normalization_threshold`` above any peak so it does not rescale,
float WAV in so its soundfile writer keeps float samples.

Usage::

    bash benchmarks/peer_setup.sh                # once
    .venv/bin/python benchmarks/bench_peer.py    # ~25 min on 2 cores; --quick: ~3 min

Child roles (internal): ``bench_peer.py child ROLE SPEC.json``; the peer roles
run under the peer venv's python and import only numpy, yaml, torch and
audio_separator (no stemflow).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".peer-venv" / "bin" / "python"
OUR_PYTHON = Path(sys.executable)
REAL_BS = ROOT / "configs/models/config_bs_roformer_384_8_2_485100.yaml"
REAL_MEL = ROOT / "configs/models/config_vocals_mel_band_roformer_kj.yaml"
MID_BS = HERE / "configs/bs_roformer_mid.yaml"
SAMPLE_RATE = 44100


# ---------------------------------------------------------------- shared helpers


def music_like(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A deterministic music-like stereo signal, float32 ``[2, N]``.

    Harmonic tones with slow vibrato, a noise-burst beat, a bass line and a
    little noise; the channels differ (delay and gain); scaled to peak 0.8.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    tones = sum(
        0.08 * np.sin(2 * np.pi * f * t * (1 + 0.002 * np.sin(2 * np.pi * 5 * t)) + rng.uniform(0, 2 * np.pi))
        for f in (220.0, 277.2, 329.6, 440.0, 659.3, 880.0)
    )
    beat = (np.sin(2 * np.pi * 2 * t) > 0.9) * rng.standard_normal(n) * 0.25
    bass = 0.2 * np.sin(2 * np.pi * 55 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    mono = tones + beat + bass + 0.01 * rng.standard_normal(n)
    left = mono
    right = 0.9 * np.roll(mono, 29) + 0.01 * rng.standard_normal(n)
    stereo = np.stack([left, right])
    return (stereo * (0.8 / np.abs(stereo).max())).astype(np.float32)


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB of ``estimate`` against ``reference`` (float64 sums; inf when equal)."""
    ref = reference.astype(np.float64)
    err = ref - estimate.astype(np.float64)
    num, den = float(np.sum(ref**2)), float(np.sum(err**2))
    if den == 0.0:
        return math.inf
    return 10 * math.log10(max(num, 1e-30) / den)


def load_yaml_with_tuples(path: Path) -> dict[str, Any]:
    """A community config as a dict; ``!!python/tuple`` becomes a tuple (safe loader)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor(
        "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
    )
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def run_child(
    python: Path, role: str, spec: dict[str, Any], work: Path, timeout_s: float = 3600, *, reuse: bool = False
) -> dict[str, Any]:
    """Run ``role`` in a fresh interpreter; returns its JSON result plus wall time and peak RSS.

    Peak RSS comes from ``os.wait4`` on that one child (``ru_maxrss``, KiB on Linux). The
    result is kept in ``work``; ``reuse`` returns a kept result of the same role and tag
    instead of running again (to resume an interrupted run).
    """
    spec_path = work / f"spec_{role}_{spec['tag']}.json"
    result_path = work / f"result_{role}_{spec['tag']}.json"
    if reuse and result_path.exists():
        kept = json.loads(result_path.read_text())
        if "peak_rss_mib" in kept:
            return kept
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(spec.get("threads", 2))}
    log_path = work / f"log_{role}_{spec['tag']}.txt"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "child", role, str(spec_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work),
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"child {role} ({spec['tag']}) failed with exit code {code}:\n{tail}")
    result = json.loads(result_path.read_text())
    result.update(process_wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024)
    result_path.write_text(json.dumps(result))
    return result


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load, and versions (torch, stemflow, audio-separator in its venv)."""
    import torch

    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        from importlib.metadata import version

        info["stemflow"] = version("stemflow")
    except Exception:  # noqa: BLE001 - informative only
        info["stemflow"] = "unknown"
    if PEER_PYTHON.exists():
        probe = subprocess.run(
            [str(PEER_PYTHON), "-c", "import importlib.metadata as m, torch; print(m.version('audio-separator'), torch.__version__)"],
            capture_output=True, text=True,
        )
        if probe.returncode == 0:
            peer_version, peer_torch = probe.stdout.split()
            info["audio_separator"] = peer_version
            info["peer_torch"] = peer_torch
    return info


# ---------------------------------------------------------------- children


def _set_threads(spec: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started (called in-process)
        pass


def _time_forwards(call, x, repeats: int) -> tuple[list[float], np.ndarray]:
    times, first = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        y = call(x)
        times.append(time.perf_counter() - start)
        if first is None:
            first = y.float().numpy()
    return times, first


def child_ours_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """stemflow model class: ``model(x)`` on one chunk, under ``torch.inference_mode``."""
    import torch

    from stemflow.models import load_model

    _set_threads(spec)
    start = time.perf_counter()
    model = load_model(spec["config"], spec["checkpoint"])
    load_s = time.perf_counter() - start
    x = torch.from_numpy(np.load(spec["input"]))
    # audio-separator's copy of the Roformer code keeps ``zero_dc`` but never applies it (the
    # reference zeroes the DC bin before the inverse STFT). Capture, at the cost of one more
    # inverse STFT in the first forward, our output without that zeroing too.
    without_dc_zeroing: list[torch.Tensor] = []
    istft = model._istft

    def istft_both(spec_: torch.Tensor, window: torch.Tensor, length: int | None) -> torch.Tensor:
        if not without_dc_zeroing and model.zero_dc:
            model.zero_dc = False
            without_dc_zeroing.append(istft(spec_, window, length))
            model.zero_dc = True
        return istft(spec_, window, length)

    model._istft = istft_both
    with torch.inference_mode():
        times, y = _time_forwards(model, x, spec["repeats"])
    np.save(spec["output"], y)
    if without_dc_zeroing:
        np.save(spec["output_no_zero_dc"], without_dc_zeroing[0].numpy().reshape(y.shape))
    return {"load_s": load_s, "forward_s": times, "zero_dc": bool(model.zero_dc)}


def child_peer_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """audio-separator's model class (its copy of the Roformer code), forward under ``torch.no_grad``."""
    import inspect

    import torch
    from audio_separator.separator.uvr_lib_v5.roformer import bs_roformer, mel_band_roformer

    _set_threads(spec)
    config = load_yaml_with_tuples(Path(spec["config"]))
    cls = bs_roformer.BSRoformer if "freqs_per_bands" in config["model"] else mel_band_roformer.MelBandRoformer
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in config["model"].items() if k in accepted}
    dropped = sorted(set(config["model"]) - accepted)
    start = time.perf_counter()
    model = cls(**kwargs)
    model.load_state_dict(torch.load(spec["checkpoint"], map_location="cpu", weights_only=True), strict=True)
    model.eval()
    load_s = time.perf_counter() - start
    x = torch.from_numpy(np.load(spec["input"]))
    with torch.no_grad():
        times, y = _time_forwards(model, x, spec["repeats"])
    np.save(spec["output"], y)
    return {"load_s": load_s, "forward_s": times, "class": cls.__name__, "dropped_config_keys": dropped}


def child_ours_e2e(spec: dict[str, Any]) -> dict[str, Any]:
    """stemflow end to end: load model, decode, Separator.separate, write float WAVs."""
    import torch

    from stemflow.audio.decode import load_audio
    from stemflow.audio.encode import save_audio
    from stemflow.engine.separator import Separator
    from stemflow.models import load_model

    _set_threads(spec)
    start = time.perf_counter()
    model = load_model(spec["config"], spec["checkpoint"])
    separator = Separator(
        model, chunk_size=spec["chunk_size"], num_overlap=spec["num_overlap"], batch_size=spec["batch_size"],
        precision=spec.get("precision", "float32"), device=spec.get("device", "cpu"),
    )
    loaded = time.perf_counter()
    decoded = load_audio(spec["input"], sample_rate=SAMPLE_RATE)
    stems = separator.separate(decoded.samples, decoded.sample_rate)
    separated = time.perf_counter()
    out_dir = Path(spec["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, samples in stems.items():
        save_audio(out_dir / f"{stem}.wav", samples, decoded.sample_rate, bit_depth=32)
    done = time.perf_counter()
    return {
        "load_model_s": loaded - start, "separate_s": separated - loaded, "write_s": done - separated,
        "total_s": done - start, "chunks": len(separator.plan(decoded.samples.shape[1]).chunks),
        "torch_threads": torch.get_num_threads(),
    }


def child_peer_e2e(spec: dict[str, Any]) -> dict[str, Any]:
    """audio-separator end to end, offline: MDXCSeparator on the local checkpoint, float WAV output."""
    import logging

    import torch
    from audio_separator.separator.architectures.mdxc_separator import MDXCSeparator

    _set_threads(spec)
    config = load_yaml_with_tuples(Path(spec["config"]))
    model_data = {**config, "is_roformer": True}
    out_dir = Path(spec["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("audio_separator_bench")
    common = {
        "logger": logger, "log_level": logging.WARNING,
        "torch_device": torch.device(spec.get("device", "cpu")), "torch_device_cpu": torch.device("cpu"),
        "torch_device_mps": None,
        "onnx_execution_provider": None, "model_name": "bench", "model_path": spec["checkpoint"],
        "model_data": model_data, "output_dir": str(out_dir), "output_format": "WAV", "output_bitrate": None,
        "normalization_threshold": 1.0e9, "amplification_threshold": None, "enable_denoise": False,
        "output_single_stem": None, "invert_using_spec": False, "sample_rate": SAMPLE_RATE, "use_soundfile": True,
    }
    # Its Roformer chunk is stft_hop_length * (segment_size - 1) samples.
    hop = int(config["model"]["stft_hop_length"])
    arch = {
        "segment_size": spec["chunk_size"] // hop + 1, "override_model_segment_size": True,
        "batch_size": 1, "overlap": spec["num_overlap"], "pitch_shift": 0,
    }
    start = time.perf_counter()
    separator = MDXCSeparator(common, arch)
    loaded = time.perf_counter()
    files = separator.separate(spec["input"])
    done = time.perf_counter()
    return {
        "load_model_s": loaded - start, "separate_and_write_s": done - loaded, "total_s": done - start,
        "files": [str(f) for f in files], "torch_threads": torch.get_num_threads(),
    }


CHILDREN = {
    "ours-forward": child_ours_forward,
    "peer-forward": child_peer_forward,
    "ours-e2e": child_ours_e2e,
    "peer-e2e": child_peer_e2e,
}


# ---------------------------------------------------------------- cases (parent)


def make_checkpoint(config_path: Path, path: Path, seed: int = 0) -> int:
    """Seeded random weights of ``config_path``'s model saved as a plain state dict; returns the parameter count."""
    import torch

    from stemflow.models import build_model
    from stemflow.models.config import load_config

    torch.manual_seed(seed)
    model = build_model(load_config(config_path))
    torch.save(model.state_dict(), path)
    return sum(p.numel() for p in model.parameters())


def forward_case(name: str, config_path: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from stemflow.models.config import load_config

    config = load_config(config_path)
    chunk = config.audio.chunk_size if not args.quick else 441 * 200  # quick: 2 s, a multiple of the hop
    ckpt = work / f"{name}.ckpt"
    if args.reuse and ckpt.exists() and (work / f"{name}_input.npy").exists():
        from stemflow.models import build_model

        with torch.device("meta"):
            params = sum(p.numel() for p in build_model(load_config(config_path)).parameters())
    else:
        params = make_checkpoint(config_path, ckpt)
        np.save(work / f"{name}_input.npy", music_like(chunk / SAMPLE_RATE, SAMPLE_RATE, seed=3)[None])
    common = {"config": str(config_path), "checkpoint": str(ckpt), "input": str(work / f"{name}_input.npy"),
              "repeats": 1, "threads": args.threads}
    print(f"[forward] {name}: {params / 1e6:.1f} M params, chunk {chunk} samples ({chunk / SAMPLE_RATE:.2f} s)", flush=True)
    # One child per repeat, the tools taking turns: a change in the machine's load hits both.
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
    for repeat in range(args.repeats):
        tag = f"{name}_r{repeat}"
        runs["ours"].append(run_child(OUR_PYTHON, "ours-forward", {
            **common, "tag": tag, "output": str(work / f"{name}_ours.npy"),
            "output_no_zero_dc": str(work / f"{name}_ours_no_zero_dc.npy")}, work, reuse=args.reuse))
        runs["peer"].append(run_child(args.peer_python, "peer-forward", {
            **common, "tag": tag, "output": str(work / f"{name}_peer.npy")}, work, reuse=args.reuse))
        print(f"  repeat {repeat}: stemflow {runs['ours'][-1]['forward_s'][0]:7.2f} s, "
              f"audio-separator {runs['peer'][-1]['forward_s'][0]:7.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    ours, peer = (_merge_runs(runs[k]) for k in ("ours", "peer"))
    print(f"  stemflow        : {_fmt_times(ours['forward_s'])}  peak RSS {ours['peak_rss_mib']:.0f} MiB", flush=True)
    print(f"  audio-separator : {_fmt_times(peer['forward_s'])}  peak RSS {peer['peak_rss_mib']:.0f} MiB", flush=True)
    y_ours, y_peer = np.load(work / f"{name}_ours.npy"), np.load(work / f"{name}_peer.npy")
    same_shape = y_ours.shape == y_peer.shape
    max_abs = float(np.max(np.abs(y_ours - y_peer))) if same_shape else float("nan")
    agreement = sdr_db(y_peer, y_ours) if same_shape else float("nan")
    print(f"  outputs {y_ours.shape} vs {y_peer.shape}: max |diff| {max_abs:.2e}, SDR {agreement:.1f} dB", flush=True)
    no_dc_path = work / f"{name}_ours_no_zero_dc.npy"
    max_abs_no_dc = agreement_no_dc = float("nan")
    if no_dc_path.exists() and same_shape:
        y_no_dc = np.load(no_dc_path)
        max_abs_no_dc = float(np.max(np.abs(y_no_dc - y_peer)))
        agreement_no_dc = sdr_db(y_peer, y_no_dc)
        print(f"  ours without DC-bin zeroing (what audio-separator computes): max |diff| {max_abs_no_dc:.2e}, "
              f"SDR {agreement_no_dc:.1f} dB", flush=True)
    return {
        "case": name, "config": config_path.name, "params": params, "chunk_size": chunk,
        "chunk_s": chunk / SAMPLE_RATE, "stemflow": ours, "audio_separator": peer,
        "output_shape": list(y_ours.shape), "peer_output_shape": list(y_peer.shape),
        "max_abs_diff": max_abs, "max_abs_output": float(np.max(np.abs(y_peer))), "sdr_db": agreement,
        "max_abs_diff_without_dc_zeroing": max_abs_no_dc, "sdr_without_dc_zeroing_db": agreement_no_dc,
        "speed_ratio_peer_over_ours": float(np.median(peer["forward_s"]) / np.median(ours["forward_s"])),
    }


def e2e_case(args: argparse.Namespace, work: Path, num_overlap: int, seconds: float, *, zero_dc: bool) -> dict[str, Any]:
    """One end-to-end comparison; ``zero_dc=False`` runs our model without the reference's DC-bin
    zeroing (what audio-separator's copy computes), to isolate the overlap-add differences."""
    import soundfile as sf

    from stemflow.models.config import load_config

    config = load_config(MID_BS)
    tag = f"e2e_overlap{num_overlap}" + ("" if zero_dc else "_no_zero_dc")
    our_config = MID_BS
    if not zero_dc:
        our_config = work / "bs_roformer_mid_no_zero_dc.yaml"
        our_config.write_text(MID_BS.read_text().replace("\nmodel:\n", "\nmodel:\n  zero_dc: false\n", 1))
    ckpt = work / "mid.ckpt"
    if not ckpt.exists():
        make_checkpoint(MID_BS, ckpt)
    wav = work / "track.wav"
    if not wav.exists() or sf.info(str(wav)).frames != int(round(seconds * SAMPLE_RATE)):
        sf.write(str(wav), music_like(seconds, SAMPLE_RATE, seed=1).T, SAMPLE_RATE, subtype="FLOAT")
    chunk = config.audio.chunk_size if args.chunk_seconds is None else int(round(args.chunk_seconds * SAMPLE_RATE / 441)) * 441
    common = {"config": str(MID_BS), "checkpoint": str(ckpt), "input": str(wav), "num_overlap": num_overlap,
              "batch_size": args.batch_size, "threads": args.threads, "tag": tag, "chunk_size": chunk}
    print(f"[e2e] mid-size BS-RoFormer, {seconds:.0f} s track, chunk {chunk / SAMPLE_RATE:.2f} s, num_overlap {num_overlap}"
          f"{'' if zero_dc else ', ours without DC-bin zeroing'}", flush=True)
    ours = run_child(OUR_PYTHON, "ours-e2e", {**common, "config": str(our_config),
                                               "output_dir": str(work / f"{tag}_ours")}, work)
    print(f"  stemflow        : {ours['process_wall_s']:7.1f} s wall ({ours['separate_s']:.1f} s separate, "
          f"{ours['chunks']} chunks), peak RSS {ours['peak_rss_mib']:.0f} MiB", flush=True)
    peer = run_child(args.peer_python, "peer-e2e", {**common, "output_dir": str(work / f"{tag}_peer")}, work)
    print(f"  audio-separator : {peer['process_wall_s']:7.1f} s wall ({peer['separate_and_write_s']:.1f} s separate+write), "
          f"peak RSS {peer['peak_rss_mib']:.0f} MiB", flush=True)

    length = int(round(seconds * SAMPLE_RATE))
    tail_start = max(length - chunk, 0)
    stems: dict[str, Any] = {}
    mixture = sf.read(str(wav), dtype="float32", always_2d=True)[0].T
    for stem in config.stems:
        ours_audio = sf.read(str(work / f"{tag}_ours" / f"{stem}.wav"), dtype="float32", always_2d=True)[0].T
        matches = glob.glob(str(work / f"{tag}_peer" / f"*({stem})*.wav"))
        if len(matches) != 1:
            raise RuntimeError(f"audio-separator output for {stem!r}: expected one file, found {matches}")
        peer_info = sf.info(matches[0])
        peer_audio = sf.read(matches[0], dtype="float32", always_2d=True)[0].T
        entry = {"sdr_db": sdr_db(peer_audio, ours_audio), "peer_subtype": peer_info.subtype,
                 "stem_rms": float(np.sqrt(np.mean(peer_audio.astype(np.float64) ** 2)))}
        # Samples outside audio-separator's last chunk (it realigns that chunk to end at the track's end).
        entry["sdr_before_peer_tail_db"] = sdr_db(peer_audio[:, :tail_start], ours_audio[:, :tail_start])
        entry["max_abs_diff"] = float(np.max(np.abs(peer_audio - ours_audio)))
        stems[stem] = entry
        print(f"  {stem:7s}: SDR ours vs theirs {entry['sdr_db']:6.1f} dB (before their tail chunk "
              f"{entry['sdr_before_peer_tail_db']:6.1f} dB), max |diff| {entry['max_abs_diff']:.2e}", flush=True)
    return {
        "case": tag, "config": MID_BS.name, "track_s": seconds, "chunk_size": chunk, "num_overlap": num_overlap,
        "stemflow_zero_dc": zero_dc,
        "batch_size_stemflow": args.batch_size, "stemflow": ours, "audio_separator": peer, "stems": stems,
        "mixture_rms": float(np.sqrt(np.mean(mixture.astype(np.float64) ** 2))),
        "speed_ratio_peer_over_ours": peer["process_wall_s"] / ours["process_wall_s"],
    }


def _merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One tool's repeats (one child each): all forward times, the largest peak RSS, the first run's details."""
    merged = dict(runs[0])
    merged["forward_s"] = [t for r in runs for t in r["forward_s"]]
    merged["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    merged["load_s"] = [r["load_s"] for r in runs]
    return merged


def _fmt_times(times: list[float]) -> str:
    return f"forward {np.median(times):7.2f} s (median of {len(times)}: " + ", ".join(f"{t:.2f}" for t in times) + ")"


def print_table(results: dict[str, Any]) -> None:
    print("\n| case | stemflow s | audio-separator s | speed-up | RSS stemflow MiB | RSS audio-separator MiB | agreement |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in results["forward"]:
        ours, peer = case["stemflow"], case["audio_separator"]
        print(f"| forward {case['case']} ({case['chunk_s']:.1f} s chunk) | {np.median(ours['forward_s']):.2f} | "
              f"{np.median(peer['forward_s']):.2f} | {case['speed_ratio_peer_over_ours']:.2f}x | "
              f"{ours['peak_rss_mib']:.0f} | {peer['peak_rss_mib']:.0f} | max diff {case['max_abs_diff']:.1e} |")
    for case in results["e2e"]:
        ours, peer = case["stemflow"], case["audio_separator"]
        worst = min(s["sdr_db"] for s in case["stems"].values())
        label = "" if case["stemflow_zero_dc"] else ", ours w/o DC zeroing"
        print(f"| e2e mid {case['track_s']:.0f} s, overlap {case['num_overlap']}{label} | {ours['process_wall_s']:.1f} | "
              f"{peer['process_wall_s']:.1f} | {case['speed_ratio_peer_over_ours']:.2f}x | {ours['peak_rss_mib']:.0f} | "
              f"{peer['peak_rss_mib']:.0f} | min SDR {worst:.1f} dB |")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        role, spec_path = argv[1], Path(argv[2])
        spec = json.loads(spec_path.read_text())
        result = CHILDREN[role](spec)
        Path(spec["result_path"]).write_text(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s chunks and a 12 s track: a smoke run")
    parser.add_argument("--cases", nargs="+", default=["forward", "e2e"], choices=["forward", "e2e"])
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per tool (real size: ~1-2 min each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=1, help="stemflow's batch size (audio-separator's Roformer path runs 1)")
    parser.add_argument("--seconds", type=float, default=60.0, help="end-to-end track length")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="end-to-end chunk length (default: the config's 11 s; --quick: 2 s)")
    parser.add_argument("--e2e-cases", nargs="+", default=["timed", "equivalence"], choices=["timed", "equivalence"],
                        help="timed: overlap 2, our reference model; equivalence: overlap 1, ours without DC zeroing")
    parser.add_argument("--reuse", action="store_true", help="reuse child results kept in --work (resume a run)")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    parser.add_argument("--work", type=Path, default=HERE / "results" / "peer_work.tmp")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peer_cpu.json")
    args = parser.parse_args(argv)
    if not args.peer_python.exists():
        parser.error(f"{args.peer_python} not found: run benchmarks/peer_setup.sh first")
    if args.quick:
        args.seconds = min(args.seconds, 12.0)
        args.chunk_seconds = args.chunk_seconds or 2.0
        args.repeats = min(args.repeats, 2)
    args.work = args.work.resolve()  # children run with the work folder as their cwd
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "forward": [], "e2e": []}
    print(json.dumps(results["machine"]), flush=True)
    if "forward" in args.cases:
        for name, path in (("bs_roformer_4stem_real", REAL_BS), ("mel_roformer_vocals_real", REAL_MEL)):
            results["forward"].append(forward_case(name, path, args, args.work))
            save(results, args.out)
    if "e2e" in args.cases:
        # The timed comparison (our reference-exact model), then the equivalence check: one window per
        # sample (overlap 1), our model without DC-bin zeroing, like audio-separator's copy.
        if "timed" in args.e2e_cases:
            results["e2e"].append(e2e_case(args, args.work, 2, args.seconds, zero_dc=True))
            save(results, args.out)
        if "equivalence" in args.e2e_cases:
            results["e2e"].append(e2e_case(args, args.work, 1, args.seconds, zero_dc=False))
    print_table(results)
    save(results, args.out)
    print(f"\nwrote {args.out}")
    return 0


def save(results: dict[str, Any], out: Path) -> None:
    """Write ``results`` (so far) to ``out``, with the load average now."""
    results["machine"]["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
