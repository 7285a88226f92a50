"""``neuroplastic demo``: the NPN paper's moons experiment, sparsify and expand, in about half a minute of CPU time.

Both shipped recipes (``npn-moons-sparse``, ``npn-moons-expand``) run through the same recipe runner
as every other experiment. While they train, the decision boundary is recorded every few epochs; at the
end the demo prints a table beside the paper's figures and writes, into ``--out``:

* ``results.json``: one object per run (the runner's result fields);
* ``<mode>/``: each run's own folder (recipe, history, events, results; the checkpoint is written every
  500 epochs and at the end, not every epoch, and the capacity plots are left to ``neuroplastic plot``:
  both cost more than the training of this tiny network);
* ``boundary-<mode>.png``: the decision boundary at the end of each stage;
* ``boundary-<mode>.gif``: the boundary as training proceeds, with the live units in the caption.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from neuroplastic.data.moons import moons_splits
from neuroplastic.errors import BadInput
from neuroplastic.plots.boundary import BoundaryFrame, boundary_frame, save_boundary_gif, save_boundary_png
from neuroplastic.recipes.runner import execute, prepare

PAPER = {"sparse": {"test_accuracy": 0.990, "params": 3234}, "expand": {"test_accuracy": 0.992, "params": 3300}}
RECIPES = {"sparse": "npn-moons-sparse", "expand": "npn-moons-expand"}
CHECKPOINT_EVERY = 500  # epochs; a checkpoint write costs more than an epoch of the moons MLP


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The demo's options (also used by ``neuroplastic demo``)."""
    parser = parser or argparse.ArgumentParser(prog="neuroplastic demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="neuroplastic-demo", help="output folder (default ./neuroplastic-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and gates")
    parser.add_argument("--modes", default="sparse,expand", help="comma-separated: sparse, expand")
    parser.add_argument("--frame-every", type=int, default=50, help="epochs between GIF frames (default 50)")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count (quick looks)")
    parser.add_argument("--overwrite", action="store_true", help="replace run folders left by an earlier demo")
    parser.add_argument("--jobs", type=int, default=None,
                        help="modes trained at once, one process each (default: one per mode, at most one per core)")
    return parser


def run_demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the requested modes and write every output; returns the result objects."""
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in RECIPES:
            raise BadInput(f"--modes may contain {sorted(RECIPES)}, got {mode!r}")
    if args.frame_every < 1:
        raise BadInput(f"--frame-every must be >= 1, got {args.frame_every}")
    jobs = min(len(modes), os.cpu_count() or 1) if args.jobs is None else args.jobs
    if jobs < 1:
        raise BadInput(f"--jobs must be >= 1, got {jobs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # a tiny MLP: threads only add overhead
    for mode in modes:
        run_dir = out / mode
        if run_dir.exists() and any(run_dir.iterdir()) and not args.overwrite:
            raise FileExistsError(f"{run_dir} holds an earlier demo run: pass --overwrite or another --out")
    for mode in modes:
        for f in sorted((out / mode).rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
    if jobs == 1:
        results = [_run_mode(mode, out / mode, out, args, 0) for mode in modes]
    else:  # the two moons runs side by side, one process (and one core) each
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_mode, mode, out / mode, out, args, i) for i, mode in enumerate(modes)]
            results = [f.result() for f in futures]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"\nwrote {out / 'results.json'} and the boundary pictures in {out}/")
    return results


def _run_mode(mode: str, run_dir: Path, out: Path, args: argparse.Namespace, position: int) -> dict[str, Any]:
    """Train one mode (in this process or a worker) and draw its boundary pictures."""
    torch.set_num_threads(1)
    overrides = [f"seed={args.seed}", f"epochs_scale={args.epochs_scale}", "snapshot_every=50"]
    prep = prepare(RECIPES[mode], overrides, out=run_dir)
    data = moons_splits(seed=args.seed, n_val=prep.recipe["data"]["val_size"])
    epochs = prep.recipe["epochs"]
    stages = prep.recipe["method"]["stages"]
    stage_ends = {stages[0] - 1, stages[1] - 1, epochs - 1}
    frames: list[BoundaryFrame] = []
    stage_frames: list[BoundaryFrame] = []
    bar = tqdm(total=epochs, desc=f"NPN {mode}", unit="epoch", dynamic_ncols=True, position=position)

    def record(epoch: int, rec: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_acc=f"{rec['val_acc']:.3f}",
                        units="-".join(map(str, rec["arch"])), params=rec["params"], refresh=False)
        if epoch % args.frame_every == 0 or epoch in stage_ends:
            caption = (f"{mode}, epoch {epoch}, stage {rec['stage']}, k={rec['k']:g}\n"
                       f"units {'-'.join(map(str, rec['arch']))}, {rec['params']} params, "
                       f"val acc {rec['val_acc']:.3f}")
            frame = boundary_frame(prep.model, data.embed, caption)
            frames.append(frame)
            if epoch in stage_ends:
                stage_frames.append(frame)

    t0 = time.perf_counter()
    result = execute(prep, progress=False, callbacks=(record,), checkpoint_every=CHECKPOINT_EVERY, plots=False)
    bar.close()
    result["wall_seconds"] = time.perf_counter() - t0
    points, labels = data.to_2d(data.x_test).numpy(), data.y_test.numpy()
    save_boundary_png(out / f"boundary-{mode}.png", stage_frames, points, labels)
    save_boundary_gif(out / f"boundary-{mode}.gif", frames, points, labels)
    return result


def _table(results: list[dict[str, Any]]) -> str:
    head = f"{'mode':<8}{'test acc':>10}{'paper':>8}{'params':>8}{'paper':>8}{'dense':>8}  {'arch':<10}{'wall s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        paper = PAPER[r["mode"]]
        lines.append(
            f"{r['mode']:<8}{100 * r['test_accuracy']:>9.1f}%{100 * paper['test_accuracy']:>7.1f}%"
            f"{r['params']:>8}{paper['params']:>8}{r['params_dense']:>8}  {'-'.join(map(str, r['arch'])):<10}"
            f"{r['wall_seconds']:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neuroplastic demo``."""
    run_demo(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
