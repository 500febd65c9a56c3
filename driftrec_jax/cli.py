"""The `driftrec` command line.

Each subcommand lives in its own module with two functions, ``configure(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so that, for
instance, `driftrec restore` never pays for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "model-info": ("driftrec_jax.networks.info", "print a network config's parameter count and shapes"),
    "restore": ("driftrec_jax.restore_cli", "restore JPEG images (files or folders) to PNG"),
    "train": ("driftrec_jax.train_cli", "train a model from a config (same as train.py)"),
    "evaluate": ("driftrec_jax.evaluate", "evaluate checkpoints on an image folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftrec",
        description="DriftRec blind JPEG restoration in JAX. Run `driftrec COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"driftrec: the '{name}' command is not available in this version", file=sys.stderr)
            return 2
        raise
    sub_parser = argparse.ArgumentParser(prog=f"driftrec {name}", description=help_text)
    module.configure(sub_parser)
    args, rest = sub_parser.parse_known_args(argv[1:])
    if rest and not getattr(module, "ACCEPTS_OVERRIDES", False):
        sub_parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.overrides = rest
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
