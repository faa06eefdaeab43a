"""The main job on embedded defaults: a small demo catalogue, separated end to end.

    .venv/bin/python -m pipelines.demo [--root demo-output] [--model spleeter-2stems]

Builds ``<root>/catalogue/`` from the MUSDB18 excerpt that the ``stempeg``
package ships (a ``.stem.mp4`` whose stream 0 is the mixture) plus a few
generated tracks, runs the ``separate_catalogue`` flow (Prefect's ephemeral
API, a local Ray) into ``<root>/out`` with the offline model, then prints where
the stems and the Parquet records are and a few rows. Running it again does no
separation work: every track is already committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GENERATED_SECONDS = 6.0
SAMPLE_RATE = 44100


def _generated_track(seed: int, seconds: float = GENERATED_SECONDS) -> np.ndarray:
    """A stereo ``[2, N]`` toy song: a chord (pads), a pulsing tone (lead), a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    pads = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.25, 1.5)) / 3
    lead = np.sin(2 * np.pi * root * 4 * t + 3 * np.sin(2 * np.pi * 5 * t)) * (np.sin(2 * np.pi * 2 * t) > 0)
    noise = rng.standard_normal(t.size) * 0.02
    left = 0.3 * pads + 0.25 * lead + noise
    right = 0.3 * pads + 0.2 * lead + noise
    return np.stack([left, right]).astype(np.float32)


def build_demo_catalogue(catalogue_path: Path, generated: int = 3) -> list[Path]:
    """Fill ``catalogue_path`` with the stempeg excerpt and ``generated`` toy songs; their paths."""
    import soundfile as sf
    import stempeg

    catalogue_path.mkdir(parents=True, exist_ok=True)
    made = []
    excerpt = catalogue_path / "musdb18-excerpt" / "the-easton-ellises-falcon-69.stem.mp4"
    excerpt.parent.mkdir(exist_ok=True)
    if not excerpt.exists():
        shutil.copyfile(stempeg.example_stem_path(), excerpt)
    made.append(excerpt)
    for index in range(generated):
        path = catalogue_path / "generated" / f"toy-song-{index + 1:02d}.flac"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            sf.write(path, _generated_track(index).T, SAMPLE_RATE, subtype="PCM_24")
        made.append(path)
    return made


def print_results(summary: dict, output_path: Path, rows: int = 6) -> None:
    """Where the stems and Parquet went, and the first rows of the records."""
    import pyarrow.dataset as ds

    print(f"run {summary['run_id']}: {summary['ok']} ok, {summary['errors']} errors, "
          f"{summary['planned']} planned, {summary['wall_s']:.1f} s")
    if summary["planned"] == 0:
        print("nothing to do: every track was already committed for", summary["model_id"])
    stems_dir = output_path / "stems" / summary["model_id"]
    print("stems:   ", stems_dir)
    for stem in sorted(stems_dir.glob("*/*.flac"))[:rows]:
        print("   ", stem.relative_to(output_path))
    print("parquet: ", output_path / "metadata")
    table = ds.dataset(output_path / "metadata", format="parquet", partitioning="hive").to_table()
    columns = [c for c in ("track_id", "stem", "status", "duration_s", "loudness_lufs", "residual_db",
                           "energy_share") if c in table.column_names]
    for row in table.select(columns).slice(0, rows).to_pylist():
        print("   ", row)
    print("run manifest:", summary["manifest_url"])


def main(argv: Sequence[str] | None = None) -> int:
    """Build the demo catalogue, separate it with the flow, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="demo-output", help="folder for catalogue/ and out/")
    parser.add_argument("--model", default=None,
                        help="registry name or config YAML (default: the best Roformer model whose weights are "
                             "cached, else the offline spleeter-2stems)")
    parser.add_argument("--checkpoint", default=None, help="weights, when --model is a config YAML")
    parser.add_argument("--generated", type=int, default=3, help="number of generated toy songs")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from pipelines.separate_catalogue import separate_catalogue
    from stemflow.hub.cache import default_cache_dir
    from stemflow.hub.loading import default_model_name

    model = args.model or default_model_name(default_cache_dir(os.environ))
    print(f"model: {model}")
    root = Path(args.root).resolve()
    tracks = build_demo_catalogue(root / "catalogue", args.generated)
    print(f"demo catalogue: {len(tracks)} tracks in {root / 'catalogue'}")
    summary = separate_catalogue(
        str(root / "catalogue"), str(root / "out"), model=model, checkpoint=args.checkpoint,
        shard_size=4,  # weights cache: $STEMFLOW_CACHE or ~/.cache/stemflow (read by the flow)
    )
    print_results(summary, root / "out")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
