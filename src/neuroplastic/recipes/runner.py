"""Recipe -> data, model, optimizers, method -> :func:`~neuroplastic.train.fit` -> ``results.json``.

:func:`prepare` does everything that can fail on bad input (recipe checks, data loading, model and method
construction, the run-folder checks) without writing anything; :func:`execute` then writes the run folder
and trains. The CLI turns the bad-input errors raised by :func:`prepare` (``neuroplastic.errors.USER_ERRORS``:
:class:`RecipeError`, the data layer's errors) into one line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from neuroplastic.environment import describe_environment
from neuroplastic.files import write_text_atomic
from neuroplastic.methods.base import CapacityMethod
from neuroplastic.metrics import count_flops, count_weights
from neuroplastic.recipes import registry
from neuroplastic.recipes.config import RecipeError, apply_overrides, load_recipe_file, scale_epochs, validate
from neuroplastic.train.checkpoint import seed_everything
from neuroplastic.train.distributed import barrier, ddp_wrap, world
from neuroplastic.train.loop import CHECKPOINT, fit
from neuroplastic.train.optim import build_optimizer, build_schedule
from neuroplastic.train.records import to_jsonable

log = logging.getLogger(__name__)
RECIPE_DIR = Path(__file__).parent
RESULTS = "results.json"
RECIPE_FILE = "recipe.yaml"


def shipped_recipes() -> dict[str, Path]:
    """Name -> path of every recipe shipped with the package."""
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}


def find_recipe(ref: str | Path) -> Path:
    """A shipped recipe name, or a path to a YAML file."""
    shipped = shipped_recipes()
    if str(ref) in shipped:
        return shipped[str(ref)]
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise RecipeError(f"no recipe {str(ref)!r}: not a shipped recipe ({', '.join(shipped)}) nor a YAML file")


def resolve(ref: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a recipe, apply overrides, validate it and apply ``epochs_scale``: the recipe a run executes."""
    raw = apply_overrides(load_recipe_file(find_recipe(ref)), overrides)
    cfg = validate(raw, method_keys=registry.method_option_keys)
    return validate(scale_epochs(cfg, cfg["epochs_scale"]), method_keys=registry.method_option_keys)


@dataclass
class Prepared:
    """Everything :func:`execute` needs; built by :func:`prepare` without touching the disk."""

    recipe: dict[str, Any]
    run_dir: Path
    resume: bool
    model: nn.Module
    method: CapacityMethod
    optimizers: list[torch.optim.Optimizer]
    schedules: list[Any]
    loaders: dict[str, Any]
    input_shape: tuple[int, ...]
    flops_dense: int
    source: str = ""  # the recipe reference and overrides it was resolved from (written into recipe.yaml)


def prepare(
    ref: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    resume: bool = False,
) -> Prepared:
    """Check the recipe and the run folder, load the data, build model, optimizers and method."""
    recipe = resolve(ref, overrides)
    run_dir = Path(out) if out is not None else Path("runs") / recipe["name"]
    _check_run_dir(run_dir, recipe, resume)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise RecipeError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"device {device!r} asked for, but torch sees no CUDA device")
    seed_everything(recipe["seed"])
    splits, loaders = load_data(recipe, data_dir, device)
    model = build_model(recipe, splits).to(device)
    flops_dense = count_flops(model, splits.input_shape)
    # a batch of zeros of the input shape, for methods that trace the model (values do not matter)
    example = torch.zeros((2, *splits.input_shape), device=device)
    method, optimizers, schedules = build_training(recipe, model, steps_per_epoch=len(loaders["train"]),
                                                   example_input=example)
    source = " ".join([str(ref), *overrides])
    return Prepared(recipe, run_dir, resume, model, method, optimizers, schedules, loaders,
                    tuple(splits.input_shape), flops_dense, source)


def load_data(recipe: dict[str, Any], data_dir: str | Path | None, device: str) -> tuple[Any, dict[str, Any]]:
    """The data set's splits and the train/val/test loaders the recipe asks for."""
    from neuroplastic.data import load_dataset

    data = recipe["data"]
    splits = load_dataset(data["name"], data_dir=data_dir, val_size=data["val_size"], seed=recipe["seed"],
                          device=device)
    aug = data["augment"]
    rank, world_size = world()  # under torchrun every process trains its share of each batch
    train = splits.train_loader(data["batch_size"], seed=recipe["seed"], normalize=data["normalize"],
                                augment=False, crop_padding=aug["crop_padding"], padding_mode=aug["padding_mode"],
                                hflip=aug["flip"], cutout=aug["cutout"], rank=rank, world_size=world_size)
    loaders = {split: splits.eval_loader(split, data["eval_batch_size"], normalize=data["normalize"])
               for split in ("val", "test")}
    return splits, {"train": train, **loaders}


def build_model(recipe: dict[str, Any], splits: Any) -> nn.Module:
    """The recipe's model (a zoo name or ``"module:function"``), sized for the data set.

    ``num_classes`` (and ``in_channels`` for image data) come from the data set unless ``model.kwargs``
    gives them.
    """
    from neuroplastic.models import get_model

    kwargs = dict(recipe["model"]["kwargs"])
    kwargs.setdefault("num_classes", splits.num_classes)
    if len(splits.input_shape) == 3:  # images: the zoo's image models take in_channels; MLPs on vectors do not
        kwargs.setdefault("in_channels", splits.input_shape[0])
    return get_model(recipe["model"]["name"], **kwargs)


def build_training(
    recipe: dict[str, Any], model: nn.Module, *, steps_per_epoch: int, example_input: torch.Tensor | None = None
) -> tuple[CapacityMethod, list[torch.optim.Optimizer], list[Any]]:
    """Method, optimizers and per-step LR schedules, built in the order the method protocol asks.

    A method that ``takes_optimizer`` gets the weights optimizer, built first; the others are built
    first (they may add gate parameters that the optimizers must see). Every method gets
    ``example_input`` when its constructor takes it, and is bound to the optimizers and schedules.
    """
    method_cfg = dict(recipe["method"])
    name = method_cfg.pop("name")
    optim = recipe["optim"]
    epochs = recipe["epochs"]
    cls = registry.method_class(name)
    if "seed" in cls.option_names() and "seed" not in method_cfg:
        method_cfg["seed"] = recipe["seed"]  # the method's own generator follows the recipe's seed
    kwargs = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "options": method_cfg,
              "example_input": example_input}
    if cls.takes_optimizer:  # mask methods: optimizer first, the method zeroes its state
        if optim["gates"] is not None:
            raise RecipeError(f"optim.gates is only for gated methods; method {name!r} has no gates")
        optimizers = [_optimizer(list(model.parameters()), optim["weights"], "optim.weights")]
        method = registry.build_method(name, model, optimizers[0], **kwargs)
    else:  # gated methods add gate parameters to the model: build the method first
        method = registry.build_method(name, model, None, **kwargs)
        if optim["gates"] is None:
            optimizers = [_optimizer(list(model.parameters()), optim["weights"], "optim.weights")]
        else:
            gates = method.gate_parameters()
            if not gates:
                raise RecipeError(f"optim.gates is only for gated methods; method {name!r} has no gate parameters")
            gate_ids = {id(p) for p in gates}
            weights = [p for p in model.parameters() if id(p) not in gate_ids]
            optimizers = [_optimizer(weights, optim["weights"], "optim.weights"),
                          _optimizer(gates, optim["gates"], "optim.gates")]
    specs = [optim["weights"], optim["gates"]][: len(optimizers)]
    try:
        schedules = [build_schedule(o, s.get("schedule"), epochs=epochs, steps_per_epoch=steps_per_epoch)
                     for o, s in zip(optimizers, specs, strict=True)]
    except ValueError as err:
        raise RecipeError(f"optim: {err}") from None
    method.bind_optimizers(optimizers, schedules)
    return method, optimizers, schedules


def _optimizer(params: list[nn.Parameter], spec: dict[str, Any], where: str) -> torch.optim.Optimizer:
    if spec.get("name") == "lpcgd":
        lp = registry.load_object("neuroplastic.lp:build_lpcgd", what="optimizer 'lpcgd' (neuroplastic.lp)")
        return lp(params, spec)
    try:
        return build_optimizer(params, spec)
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None


def _check_run_dir(run_dir: Path, recipe: dict[str, Any], resume: bool) -> None:
    """Refuse to overwrite a run (finished, or started without ``--resume``); check a resumed recipe."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"--out {run_dir} exists and is not a folder")
    if (run_dir / RESULTS).exists():
        raise RecipeError(f"{run_dir} holds a finished run ({RESULTS}); choose another --out")
    started = any((run_dir / f).exists() for f in (RECIPE_FILE, CHECKPOINT, "history.jsonl"))
    if started and not resume:
        raise RecipeError(f"{run_dir} holds a started run; continue it with --resume or choose another --out")
    if not resume:
        return
    if not (run_dir / RECIPE_FILE).exists():
        raise RecipeError(f"--resume: {run_dir} holds no run to resume ({RECIPE_FILE} missing)")
    saved = load_recipe_file(run_dir / RECIPE_FILE)
    if saved != recipe:
        diff = sorted(_diff_keys(saved, recipe))
        raise RecipeError(f"--resume: the recipe differs from the one {run_dir} was started with at {diff}")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def execute(prep: Prepared, *, progress: bool = True, callbacks: tuple = (), checkpoint_every: int = 1,
            plots: bool = True) -> dict[str, Any]:
    """Train (or continue) the prepared run, write ``results.json``, and return its one result object.

    ``checkpoint_every`` goes to :func:`~neuroplastic.train.fit`; ``plots=False`` skips the
    capacity-over-time pictures in ``RUN_DIR/plots`` (``neuroplastic plot RUN_DIR`` draws them later).
    Under ``torchrun`` every process trains (DistributedDataParallel) and only rank 0 writes.
    """
    recipe = prep.recipe
    rank, world_size = world()
    main = rank == 0
    barrier()  # every process has checked the run folder before the main one writes into it
    if main:
        prep.run_dir.mkdir(parents=True, exist_ok=True)
    if main and not (prep.run_dir / RECIPE_FILE).exists():
        header = (f"# resolved from: {prep.source}\n# (overrides and epochs_scale already applied; "
                  f"epochs_scale is therefore 1.0 here)\n")
        write_text_atomic(prep.run_dir / RECIPE_FILE, header + yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.perf_counter()
    res = fit(prep.model, prep.method, prep.optimizers, prep.schedules, prep.loaders, epochs=recipe["epochs"],
              run_dir=prep.run_dir, selection=recipe["selection"], select_from_epoch=recipe["select_from_epoch"],
              snapshot_every=recipe["snapshot_every"], checkpoint_every=checkpoint_every, resume=prep.resume,
              progress=progress, callbacks=callbacks, wrap=ddp_wrap if world_size > 1 else None, main_process=main)
    arch = prep.method.architecture()
    flops = prep.method.live_flops(prep.input_shape)
    result = {
        "recipe": recipe["name"],
        "mode": prep.method.mode or recipe["method"]["name"],
        "seed": recipe["seed"],
        "epochs": recipe["epochs"],
        "test_accuracy": res.test_accuracy,
        "test_loss": res.test_loss,
        "val_accuracy": res.val_accuracy,
        "val_loss": res.val_loss,
        "selected_epoch": res.selected_epoch,
        "params": arch["params"],
        "params_dense": arch["params_dense"],
        "arch": arch.get("arch"),
        "flops": flops,
        "flops_dense": prep.flops_dense,
        "dataset": recipe["data"]["name"],
        "model": recipe["model"]["name"],
        "method": recipe["method"]["name"],
        "wall_seconds": res.wall_seconds,
        "session_seconds": time.perf_counter() - t0,
        "device": str(device := next(prep.model.parameters()).device),
        "processes": world_size,
        "environment": describe_environment(device),  # of the process that finished the run
    }
    result["final_metrics"] = to_jsonable(prep.method.metrics())  # per-layer density, exploration rate, ...
    if main:
        result.update(_save_compact(prep))
        write_text_atomic(prep.run_dir / RESULTS, json.dumps([result], indent=2) + "\n")
        if plots:
            _plot_over_time(prep.run_dir)
    barrier()
    return result


def _plot_over_time(run_dir: Path) -> None:
    """The capacity-over-time pictures of a finished run (architecture, mask densities, Lp), in
    ``RUN_DIR/plots``; the neuron-map GIF is left to ``neuroplastic plot`` (it takes longer)."""
    from neuroplastic.plots.cli import plot_run
    from neuroplastic.plots.rundata import PlotDataError

    for what in ("arch", "masks", "lp"):
        try:
            written, _ = plot_run(run_dir, what=[what])
        except PlotDataError:
            continue
        for path in written:
            log.info("plot: %s", path)

def _save_compact(prep: Prepared) -> dict[str, Any]:
    """Methods that remove units: write the compacted plain model (``compact.pt``, loadable with
    ``weights_only``). A model the structure tracer cannot compact does not cost the run: the reason is
    recorded instead."""
    from neuroplastic.structure import save_compact

    x = next(iter(prep.loaders["val"]))[0][:8]
    try:
        small = prep.method.compact(x)
    except (ValueError, RuntimeError, TypeError) as exc:
        log.warning("could not compact the model: %s", exc)
        return {"compact_error": str(exc)}
    if small is None:
        return {}
    save_compact(small, prep.run_dir / "compact.pt")
    return {"compact_file": "compact.pt", "compact_weights": count_weights(small),
            "compact_flops": count_flops(small, prep.input_shape)}
