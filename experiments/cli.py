"""The ``plax`` command (also ``python -m experiments``).

    plax run [PRESET] [--out DIR] [--force] [--<field> VALUE ...]   train and write a run directory
    plax compare PRESET --grid KEY=V1,V2 ...                       rank a grid of settings
    plax report RUN_DIR                                            summary and plots of a saved run
    plax list                                                      presets, data sets, choices
    plax data prepare NAME [--data-dir DIR] [--from DIR]           prepare a data set once
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time

import jax
import textwrap
from pathlib import Path

from continual.checkpoint import CheckpointError
from continual.runner import OutOfMemory
from experiments import registry, sinks
from experiments.config import ConfigBase, ConfigError

_EPILOG = """\
examples:
  plax run                                   # demo: loss of plasticity and a fix, offline
  plax run quickstart                        # a 10 s reshuffled-label digits stream
  plax run quickstart --num-tasks 5 --seeds 2 --out runs/demo
  plax run quickstart --learning-rate 1e-3,3e-4 --metrics dormant,srank,weight_sv
  plax run permuted-mnist --data-dir ~/tensorflow_datasets
  plax run cheetah-quick                     # continual RL: SAC on HalfCheetah, CPU-sized
  plax run halfcheetah-dynamics --num-envs 512   # GPU-sized RL preset
  plax report runs/demo
  plax data prepare mnist --data-dir ~/tensorflow_datasets
"""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A value such as "-1,1" or "-1e-3,2" (a comma list of numbers, backward first) is a
        # value, not an option: argparse's own pattern only knows single numbers.
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(,\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)*$")

    def error(self, message):  # argparse exits with status 2; keep that, add a pointer to help
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)


def _field_help(name: str) -> str:
    """The option's help: one text where every kind declares the field alike (shared fields),
    each kind's own text where they differ; the default per kind where those differ."""
    kinds = registry.kinds_with(name)
    declared = [(k, k.config.fields()[name]) for k in kinds]

    def described(f) -> str:
        text = f.metadata["help"]
        if f.metadata["choices"]:
            text += f" {{{', '.join(map(str, f.metadata['choices']))}}}"
        return text

    texts = {described(f) for _, f in declared}
    defaults = {_shown(f.default) for _, f in declared}
    if len(texts) == 1:
        text = texts.pop()
        if len(defaults) == 1:
            text += f" (default {defaults.pop()}"
        else:
            text += " (default " + ", ".join(f"{k.label} {_shown(f.default)}"
                                             for k, f in declared)
    else:
        text = "; ".join(f"{k.label}: {described(f)} (default {_shown(f.default)})"
                         for k, f in declared)
        text += " ("
    text += "; comma list, vmapped)" if declared[0][1].metadata["vmapped"] else ")"
    return text.replace("%", "%%")  # argparse formats help strings with %


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="plax", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="{run,compare,report,list,data}", parser_class=_Parser)

    run = sub.add_parser(
        "run", help="train a continual sequence for all seeds and write a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description=textwrap.dedent("""\
            Train a preset for every run (seeds × vmapped hyperparameters) in one compiled
            program, then write results.csv/.parquet, summary.csv, config.json and plots to the
            run directory and print a summary with 95% bootstrap intervals over seeds.
            Every config field below overrides the preset's value."""),
        epilog=_presets_text())
    run.add_argument("preset", nargs="?", default="demo",
                     help=f"one of: {', '.join(registry.preset_names())} (default demo)")
    run.add_argument("--out", help="run directory (default runs/<preset>-<time>)")
    run.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    run.add_argument("--no-plots", action="store_true", help="skip drawing plots")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a killed run from its last checkpoint (same config; the "
                          "result is identical to an uninterrupted run)")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                     help="chunked mode saves an orbax checkpoint at every task boundary and "
                          "at least every M minutes (default 10; 0 = boundaries only)")
    run.add_argument("--keep-checkpoints", type=int, default=3, metavar="N",
                     help="checkpoints kept (default 3); 0 disables checkpointing")
    run.add_argument("--snapshots", action="store_true",
                     help="chunked mode: also save the whole state (networks, optimizer, "
                          "replay) at the end of every task visit in RUN_DIR/snapshots, for a "
                          "later run to fine-tune from (--init-from RUN_DIR)")
    sinks.add_arguments(run)
    _add_overrides(run)

    cmp = sub.add_parser(
        "compare", help="run a grid of settings on one sequence and rank them",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description=textwrap.dedent("""\
            Run every combination of the --grid values (static keys compile once per
            combination; vmapped keys such as learning_rate become runs of each program), write
            one results table, and rank the settings on --rank-by with bootstrap confidence
            intervals over seeds. Diverged runs are reported and excluded from the ranking."""),
        epilog="example:\n  plax compare quickstart --grid activation=relu,crelu "
               "optimizer=adam,sgd --seeds 5")
    cmp.add_argument("preset", help=f"one of: {', '.join(registry.preset_names())}")
    cmp.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                     help="config fields and the values to try")
    cmp.add_argument("--one-at-a-time", action="store_true",
                     help="ablation instead of a full product: the first value of every key is "
                          "the baseline, and each other value is tried alone")
    cmp.add_argument("--rank-by", default=None,
                     help="comma-separated summary metrics, the first sorts the ranking "
                          "(acc_avg, acc_online, forgetting_max, forgetting_last, bwt, fwt_gem, "
                          "plasticity_first, plasticity_last, plasticity_slope, dormant_final; "
                          "RL: return_avg, return_online instead of acc_*; goal-conditioned "
                          "RL: success_avg, success_online). Default "
                          "acc_avg,plasticity_slope,forgetting_max (RL: "
                          "return_avg,plasticity_slope,forgetting_last; goal-conditioned: "
                          "success_avg,...)")
    cmp.add_argument("--statistic", choices=("mean", "iqm"), default="mean",
                     help="point estimate over seeds: mean, or interquartile mean (RL-style)")
    cmp.add_argument("--out", help="directory (default runs/compare-<preset>-<time>)")
    cmp.add_argument("--force", action="store_true", help="overwrite an existing directory")
    cmp.add_argument("--no-plots", action="store_true", help="skip drawing plots")
    sinks.add_arguments(cmp)
    _add_overrides(cmp, " (applied to every setting)")

    report = sub.add_parser("report", help="print the summary and redraw the plots of a saved run")
    report.add_argument("run_dir", help="a directory written by `plax run`")
    report.add_argument("--no-plots", action="store_true", help="print the summary only")
    report.add_argument("--reference", metavar="REF_DIR",
                        help="a run of the same sequence trained task by task from scratch "
                             "(e.g. the same preset with --reset full --reset-replay true, or "
                             "--reset full for supervised runs): prints forward transfer "
                             "ft_auc_gap (and ft_auc_cw for accuracies, Continual World's; "
                             "ft_auc_cd for performance in [0, 1], Continual-Dreamer's)")
    sinks.add_arguments(report, export=True)

    sub.add_parser("list", help="show presets, data sets, diagnostics and every choice")

    data = sub.add_parser("data", help="manage TFDS data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="{prepare}", parser_class=_Parser)
    prep = data_sub.add_parser(
        "prepare", help="download and convert a data set to array_record (needs plax[prepare]), "
                        "or convert files you have (--from)",
        description="One-time preparation of a TFDS data set as array_record files. A download "
                    "needs TensorFlow (`pip install 'plax[prepare]'`) and internet access. "
                    "Offline, --from DIR converts the data set's own distribution files "
                    "instead, with neither: MNIST / Fashion-MNIST as their four IDX files "
                    "(train-images-idx3-ubyte[.gz], ...; Debian's dataset-fashion-mnist "
                    "package has them in /usr/share/datasets/fashion-mnist), CIFAR-10 / CIFAR-100 "
                    "as an extracted binary or python tarball. Reading the "
                    "prepared files later needs nothing extra.")
    prep.add_argument("name", help="mnist, fashion_mnist, cifar10 or cifar100")
    prep.add_argument("--data-dir", help="target directory (default $PLAX_DATA_DIR or "
                                         "~/tensorflow_datasets)")
    prep.add_argument("--from", dest="source", metavar="DIR",
                      help="convert the distribution files in DIR (no download)")
    return parser


def _presets_text() -> str:
    width = max(len(n) for kind in registry.KINDS.values() for n in kind.presets) + 2
    return "\n\n".join(f"{kind.title}:\n" + "\n".join(f"  {n:{width}s}{d}"
                                                      for n, (d, _) in kind.presets.items())
                       for kind in registry.KINDS.values())


def _add_overrides(parser, suffix: str = "") -> None:
    """One option per config field: those every kind shares, then each kind's own."""
    shared = ConfigBase.fields()
    groups = [("options of every kind" + suffix, list(shared))]
    seen = set(shared)
    for kind in registry.KINDS.values():
        own = [n for n in kind.config.fields() if n not in seen]
        seen.update(own)
        groups.append((f"{kind.label} options ({kind.name}: "
                       f"{', '.join(kind.presets)}){suffix}", own))
    for title, names in groups:
        group = parser.add_argument_group(title)
        for name in names:
            group.add_argument(_option(name), dest=f"cfg_{name}", metavar="VALUE",
                               help=_field_help(name))


def _overrides(args) -> dict:
    preset = getattr(args, "preset", None)
    return {name: registry.parse_override(name, getattr(args, f"cfg_{name}"), preset)
            for name in registry.all_fields() if getattr(args, f"cfg_{name}") is not None}


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"run directory {out} exists and is not empty; choose another --out "
                          "or pass --force to overwrite it")


def resolve_run(args) -> tuple:
    """``(config, preset, run_dir)`` of a ``plax run`` invocation, validated, nothing run."""
    from experiments import experiment

    if args.resume:
        out = Path(args.resume)
        saved = out / "config.json"
        if not saved.exists():
            raise ConfigError(f"--resume {out}: no config.json there; is it a plax run directory?")
        if _overrides(args):
            raise ConfigError("--resume takes the saved config; config overrides are not allowed")
        cfg, preset = registry.config_from_saved(json.loads(saved.read_text()))
        return cfg, preset, out
    if args.keep_checkpoints < 0 or args.checkpoint_minutes < 0:
        raise ConfigError("--keep-checkpoints and --checkpoint-minutes must be >= 0")
    cfg = registry.from_preset(args.preset, **_overrides(args))
    out = Path(args.out) if args.out else experiment.default_run_dir(args.preset)
    _check_out(out, args.force)
    return cfg, args.preset, out


def _cmd_run(args) -> int:
    from continual.checkpoint import Checkpointer
    from experiments import experiment, report
    from experiments.distributed import is_writer
    from metrics import results

    cfg, preset, out = resolve_run(args)
    writer = is_writer()
    print(f"plax: {preset}: {cfg.describe()}, runs = {cfg.seeds} seeds × "
          f"{len(experiment.run_table(cfg)) // cfg.seeds} settings → {out}", flush=True)
    exp = registry.build(cfg)
    meta = experiment.resolved_config(cfg, preset)
    saved_batch = _saved_batch(out) if args.resume else None
    print("plax: compiling and estimating memory ...", flush=True)  # minutes for physics
    planning = time.perf_counter()
    batches = experiment.plan(exp, run_batch=saved_batch)  # compiles the programs
    planning = time.perf_counter() - planning
    print(f"plax: memory {batches.describe()} (compiled in {planning:.1f} s)", flush=True)
    meta["run_batches"] = {"batch": batches.batch, "batches": batches.batches,
                           "how": batches.how, "per_run_bytes": batches.per_run_bytes,
                           "device_bytes": batches.device_bytes}
    checkpointer = None
    # Checkpoints hold each process's device state; across processes they are not supported yet.
    if not args.resume and writer and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")  # --force: a fresh run never resumes stale state
    if (cfg.mode == "chunked" or batches.batches > 1) and args.keep_checkpoints > 0 \
            and jax.process_count() == 1:
        # The batch size is part of what a checkpoint's positions mean.
        checkpointer = Checkpointer(out / "checkpoints", keep=args.keep_checkpoints,
                                    fingerprint=f"{meta['fingerprint']}/batch{batches.batch}")
        if args.resume:
            step = checkpointer.latest_step()
            print("plax: resuming " + (f"after {step} log intervals" if step is not None
                                       else "from the start (no checkpoint was written)"))
    snapshots = None
    if args.snapshots:
        if cfg.mode != "chunked" or jax.process_count() > 1:
            raise ConfigError("--snapshots needs chunked mode (the default) in one process")
        if not args.resume and (out / "snapshots").exists():
            shutil.rmtree(out / "snapshots")
        snapshots = Checkpointer(out / "snapshots", keep=10_000,
                                 fingerprint=f"{meta['fingerprint']}/batch{batches.batch}")
        meta["snapshots"] = True
    if not args.resume and writer:
        results.save_config(out, meta)  # first, so that --resume finds the config
    try:
        table, per_run, wall = experiment.run(exp, batches=batches, checkpointer=checkpointer,
                                              checkpoint_seconds=60 * args.checkpoint_minutes,
                                              snapshots=snapshots)
    except experiment.PartialRun as partial:
        if writer:
            results.save(out, partial.table, {**meta, "partial": True})
            sinks.write(sinks.selected(args), out, partial.table, None,
                        {**meta, "partial": True}, partial=True)
        print(f"plax: stopped after {partial.progress}; results so far saved in {out}",
              file=sys.stderr)
        raise partial.cause
    wall += planning  # compilation happens while planning
    meta["wall_seconds"] = round(wall, 3)
    if not writer:
        return 0
    _, agg = report.summary(table)
    results.save(out, table, meta, per_run)
    _print_summary(table, agg, per_run)
    if not args.no_plots:
        paths = report.make_plots(table, out)
        print("plots: " + ", ".join(str(p) for p in paths))
    sinks.write(sinks.selected(args), out, table, per_run, meta)
    print(f"results: {out}/results.parquet ({len(table)} rows) in {wall:.1f} s")
    return 0


def _saved_batch(run_dir: Path) -> int | None:
    """The runs per batch a saved run used (``--resume`` runs the same batches)."""
    saved = json.loads((run_dir / "config.json").read_text())
    return saved.get("run_batches", {}).get("batch")


def _print_summary(table, agg, per_run) -> None:
    from experiments import report

    print("\nsummary (mean [95% CI] over seeds):")
    print(report.format_summary(agg))
    kept = report.plasticity_verdicts(table, agg)
    if kept:
        print("\nplasticity: performance on the trained task at the end of its visit, first "
              "visit → last visit (mean over seeds)")
        print(kept)
    relearning = report.relearning_table(table)
    if relearning:
        print(f"\nrelearning: steps until a visit reaches {100 * 0.9:.0f}% of what the task's "
              f"first visit gained (mean [95% CI] over seeds)")
        print(relearning)
    diverged = per_run[per_run["diverged"]]
    for run, row in diverged.iterrows():
        print(f"warning: run {run} (seed {row['seed']}) diverged: non-finite "
              f"{row['diverged_quantity']} in task {row['diverged_task']} by step "
              f"{row['diverged_by_step']}; frozen there and excluded from the summary",
              file=sys.stderr)


def _cmd_compare(args) -> int:
    from experiments import compare, experiment

    grid = compare.parse_grid(args.grid, args.preset)
    rank_by = args.rank_by or ",".join(registry.kind_of_preset(args.preset).rank_by)
    metrics = [m.strip() for m in rank_by.split(",") if m.strip()]
    configs = compare.grid_configs(args.preset, grid, one_at_a_time=args.one_at_a_time,
                                   **_overrides(args))
    out = Path(args.out) if args.out else experiment.default_run_dir(f"compare-{args.preset}")
    _check_out(out, args.force)
    print(f"plax compare: {len(configs)} settings × {configs[0][1].seeds} seeds → {out}")
    meta = {**experiment.resolved_config(configs[0][1], args.preset),
            "compare": {"grid": {k: [str(v) for v in vs] for k, vs in grid.items()},
                        "rank_by": metrics, "statistic": args.statistic}}
    try:
        table = compare.run_grid(configs)
    except experiment.PartialRun as partial:
        from metrics import results
        results.save(out, partial.table, {**meta, "partial": True})
        print(f"plax compare: stopped after {partial.progress}; results so far saved in {out}",
              file=sys.stderr)
        raise partial.cause
    return _write_comparison(out, table, meta, metrics, args.statistic, not args.no_plots,
                             sinks.selected(args))


def _write_comparison(out, table, meta, metrics, statistic, plots: bool,
                      tracking=()) -> int:
    from experiments import compare, report
    from metrics import results

    by = report.setting_columns(table)
    metrics = compare.metrics_for(table, metrics)
    per_run, rank = compare.compare_tables(table, by, metrics, statistic)
    results.save(out, table, meta, per_run)
    print(f"\nranking by {metrics[0]} ({statistic} [95% CI] over seeds):")
    print(report.format_summary(rank))
    for run, row in per_run[per_run["diverged"]].iterrows():
        print(f"warning: run {run} ({', '.join(f'{c}={row[c]}' for c in by + ['seed'])}) "
              f"diverged in task {row['diverged_task']} by step {row['diverged_by_step']}; "
              "excluded from the ranking", file=sys.stderr)
    if plots:
        paths = report.make_plots(table, out)
        report.plot_comparison(rank, by, metrics, Path(out) / "comparison.png")
        print("plots: " + ", ".join(str(p) for p in [*paths, Path(out) / "comparison.png"]))
    sinks.write(tracking, out, table, per_run, meta)
    return 0


def _cmd_report(args) -> int:
    from experiments import report
    from metrics import results

    table, config = results.load(args.run_dir)
    if "compare" in config:
        c = config["compare"]
        return _write_comparison(args.run_dir, table, config, c["rank_by"], c["statistic"],
                                 not args.no_plots, sinks.selected(args))
    per_run, agg = report.summary(table)
    _print_summary(table, agg, per_run)
    if args.reference:
        reference, _ = results.load(args.reference)
        ft = results.forward_transfer(table, reference)
        cols = [c for c in ("ft_auc_gap", "ft_auc_cw", "ft_auc_cd") if c in ft.columns]
        ft = ft.join(per_run["diverged"])
        print(f"\nforward transfer against {args.reference} (mean [95% CI] over seeds):")
        print(report.format_summary(results.aggregate(ft, report.setting_columns(table), cols)))
    if not args.no_plots:
        paths = report.make_plots(table, args.run_dir)
        print("plots: " + ", ".join(str(p) for p in paths))
    sinks.write(sinks.selected(args), args.run_dir, table, per_run, config)
    return 0


def _cmd_list(_args) -> int:
    from metrics.hooks import metric_names

    print(_presets_text())
    print("\nchoices:")
    listed: dict[str, list[tuple]] = {}  # name -> the choice lists printed for it
    for kind in registry.KINDS.values():
        for name, f in kind.config.fields().items():
            choices = f.metadata["choices"]
            if not choices or choices in listed.get(name, []):
                continue
            label = name if name not in listed else f"{name} ({kind.label})"
            listed.setdefault(name, []).append(choices)
            shown = (repr(c) if c == "" else str(c) for c in choices)
            print(f"  {label:18s} {', '.join(shown)}")
    print(f"  {'metrics':18s} {', '.join(metric_names())}")
    print("\nvmapped fields (comma lists, one compiled program): "
          + ", ".join(n for n, f in registry.all_fields().items() if f.metadata["vmapped"]))
    return 0


def _cmd_data(args) -> int:
    from tasks import tfds_source

    if args.data_command != "prepare":
        raise ConfigError("usage: plax data prepare NAME [--data-dir DIR] [--from DIR]")
    if args.source:
        from tasks import raw_files

        path = raw_files.prepare_from_files(args.name, args.source, args.data_dir)
    else:
        path = tfds_source.prepare(args.name, args.data_dir)
    print(f"prepared {args.name} in {path}")
    return 0


def enable_compilation_cache() -> str | None:
    """XLA's persistent compilation cache, so a second run of the same shapes skips compiling
    (minutes for the RL presets, whose physics dominates compile time). Directory:
    ``$PLAX_COMPILATION_CACHE`` (``off`` disables), default ``~/.cache/plax/xla``."""
    import os
    path = os.environ.get("PLAX_COMPILATION_CACHE", str(Path.home() / ".cache" / "plax" / "xla"))
    if path.lower() in ("", "0", "off", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    enable_compilation_cache()
    from experiments.distributed import initialize_from_env

    initialize_from_env()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = ", ".join(_option(n) for n in registry.all_fields())
        parser.error(f"unknown option(s) {' '.join(unknown)}; valid config overrides: {valid}")
    commands = {"run": _cmd_run, "compare": _cmd_compare, "report": _cmd_report, "list": _cmd_list, "data": _cmd_data}
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return commands[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, ImportError, CheckpointError,
            OutOfMemory) as err:
        print(f"plax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
