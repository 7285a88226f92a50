"""The ``neuroplastic`` command line: one table of subcommands, each a parser setup and a handler.

``neuroplastic demo`` runs the moons experiment of the NPN paper,
``neuroplastic run RECIPE [key=value ...]`` trains a recipe into a run folder, ``neuroplastic recipes``
lists the shipped recipes, ``neuroplastic plot RUN_DIR`` draws a run (from :mod:`neuroplastic.plots.cli`).
A new subcommand is one more :class:`Command` in :data:`COMMANDS`.

Bad input (the exceptions of :data:`neuroplastic.errors.USER_ERRORS`: a wrong argument, recipe key or
value, a missing or damaged data file) ends with one line on stderr and exit code 2, without a traceback.
Any other exception is a bug: it keeps its traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from neuroplastic.errors import USER_ERRORS

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: what a run folder remembers of how it was started (beside recipe.yaml): ``{"data_dir": ...}``
RUN_INFO = "run.json"


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one line of help, its arguments, and what it does (returns an exit code)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    #: hand every argument after the command name to the handler untouched (``args.args``), options and
    #: ``--help`` included: for commands whose own parser lives elsewhere (``plot``)
    pass_through: bool = False
    #: options and positionals in any order (``run RECIPE --data-dir DIR key=value``)
    intermixed: bool = False


def _fail(command: str, message: object) -> int:
    print(f"neuroplastic {command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# -- run -----------------------------------------------------------------------------------------------
def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?",
                   help="a shipped recipe name (see `neuroplastic recipes`) or a path to a YAML file; "
                        "with --resume it may be left out (the run folder's recipe.yaml is used)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. method.k=5 epochs_scale=0.1 data.batch_size=64")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--data-dir", help="data directory (default: $NEUROPLASTIC_DATA, else the user cache)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar and no per-epoch lines (history.jsonl is still written)")


def _run(args: argparse.Namespace) -> int:
    from neuroplastic.data.download import resolve_data_dir
    from neuroplastic.recipes import execute, prepare
    from neuroplastic.train.distributed import barrier, init_from_env, world

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.recipe is None:
        if not (args.resume and args.out):
            return _fail("run", "RECIPE is required (it may be left out only with --resume --out DIR)")
        args.recipe = str(Path(args.out) / "recipe.yaml")  # the resolved recipe the run was started with
    if args.resume and args.data_dir is None and args.out is not None:
        args.data_dir = remembered_data_dir(Path(args.out))  # the data the run was started with
    device = init_from_env(args.device)  # under torchrun: join the process group (one device per process)
    main = world()[0] == 0
    try:
        prep = prepare(args.recipe, args.overrides, out=args.out, data_dir=args.data_dir, device=device,
                       resume=args.resume)
    except USER_ERRORS as err:  # raised before the run folder is touched; anything else is a bug
        return _fail("run", err)
    data_dir = str(resolve_data_dir(args.data_dir).resolve())
    barrier()  # every process has checked the run folder before the main one writes into it
    if main:
        remember_run(prep.run_dir, data_dir)
        print(f"run folder: {prep.run_dir}", file=sys.stderr)
    try:
        result = execute(prep, progress=not args.no_progress)
    except KeyboardInterrupt:
        again = ["neuroplastic", "run", args.recipe, *args.overrides, "--out", str(prep.run_dir),
                 "--data-dir", data_dir, "--resume"]
        if args.device != "cpu":
            again[-1:-1] = ["--device", args.device]
        print(f"\ninterrupted; continue with: {shlex.join(again)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not main:
        return 0
    arch = result["arch"]
    arch_text = "-".join(map(str, arch)) if isinstance(arch, list) else "dense"
    print(f"{result['recipe']}: test accuracy {result['test_accuracy']:.4f} (val {result['val_accuracy']:.4f}, "
          f"epoch {result['selected_epoch']}), arch {arch_text}, params {result['params']:,}/"
          f"{result['params_dense']:,}, FLOPs {result['flops']:,}/{result['flops_dense']:,}; "
          f"{prep.run_dir / 'results.json'}")
    return 0


def remember_run(run_dir: Path, data_dir: str) -> None:
    """Write ``RUN_DIR/run.json`` with the data directory of this start (or resume) of the run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RUN_INFO + ".tmp")
    tmp.write_text(json.dumps({"data_dir": data_dir}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / RUN_INFO)


def remembered_data_dir(run_dir: Path) -> str | None:
    """The data directory ``run.json`` of ``run_dir`` remembers (``None``: no such file or entry)."""
    try:
        info = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info.get("data_dir") if isinstance(info, dict) else None


# -- recipes -------------------------------------------------------------------------------------------
def _configure_recipes(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show this recipe (after validation) instead of the list")


def _recipes(args: argparse.Namespace) -> int:
    from neuroplastic.recipes import RecipeError, shipped_recipes
    from neuroplastic.recipes.config import load_recipe_file

    if args.name is not None:
        from neuroplastic.recipes.runner import find_recipe

        try:
            print(yaml.safe_dump(load_recipe_file(find_recipe(args.name)), sort_keys=False), end="")
        except RecipeError as err:
            return _fail("recipes", err)
        return 0
    recipes = shipped_recipes()
    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        description = load_recipe_file(path).get("description", "")
        print(f"{name:<{width}}  {description}")
    return 0


# -- plot (implemented in neuroplastic.plots.cli) -----------------------------------------------------
def _configure_plot(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="RUN_DIR and the options of `neuroplastic plot`")


def _plot(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("neuroplastic.plots.cli")
    except ModuleNotFoundError as err:
        if err.name is not None and "neuroplastic.plots.cli".startswith(err.name):
            return _fail("plot", "the plotting module neuroplastic.plots.cli is not part of this build")
        raise
    code = module.main(list(args.args))
    return int(code or 0)


# -- demo (implemented in neuroplastic.demo) ----------------------------------------------------------
def _configure_demo(p: argparse.ArgumentParser) -> None:
    from neuroplastic.demo import build_parser as demo_parser

    demo_parser(p)


def _demo(args: argparse.Namespace) -> int:
    from neuroplastic.demo import run_demo

    try:
        run_demo(args)
    except (*USER_ERRORS, FileExistsError) as err:
        return _fail("demo", err)
    return 0


COMMANDS: list[Command] = [
    Command("run", "train a recipe into a run folder (results.json, history, checkpoints)", _configure_run, _run,
            intermixed=True),
    Command("recipes", "list the shipped recipes, one line each", _configure_recipes, _recipes),
    Command("plot", "draw the pictures of a run folder", _configure_plot, _plot, pass_through=True),
    Command("demo", "the NPN paper's moons experiment, sparsify and expand, with pictures", _configure_demo, _demo),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="neuroplastic", description="Networks that change their capacity.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help,
                           add_help=not command.pass_through)
        command.configure(p)
        p.set_defaults(handler=command.handler, pass_through=command.pass_through,
                       subparser=p if command.intermixed else None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neuroplastic`` script; returns the exit code (argparse errors exit with 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "subparser", None) is not None:
        # options and positionals in any order: the top-level parser has no options of its own, so
        # everything after the command name belongs to the command
        command, handler = args.command, args.handler
        args = args.subparser.parse_intermixed_args(argv[argv.index(command) + 1:])
        args.command, args.handler, extra = command, handler, []
    if getattr(args, "pass_through", False):
        args.args = [*args.args, *extra]  # options argparse set aside, e.g. ``plot --help``
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
