"""``s1-data``: the s1K curation pipeline from the command line.

    s1-data run --config pipeline.yaml [--from traces] [--to select]
    s1-data collect|traces|quality|difficulty|domains|select|export --config pipeline.yaml
            [--input TABLE] [--output TABLE]
    s1-data check --config pipeline.yaml      # validate and reach every endpoint, do nothing

Exit status: 0 done, 2 bad config or missing input, 3 an endpoint cannot be used,
130 interrupted (finished model calls are cached; run the same command again to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets_build.calls import EndpointError
from datasets_build.config import STAGES, Config, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s1-data", description="Build an s1K-style training set "
                                "from a pool of questions (quality, difficulty, diversity).")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", required=True, type=Path, help="pipeline YAML")
        sp.add_argument("--workdir", type=Path, help="override the config's workdir")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")
        sp.add_argument("--concurrency", type=int, help="override the config's concurrency")

    run = sub.add_parser("run", help="run stages in order (all by default)")
    common(run)
    run.add_argument("--from", dest="start", choices=STAGES, help="first stage")
    run.add_argument("--to", dest="stop", choices=STAGES, help="last stage")
    run.add_argument("--input", type=Path, help="input table of the first stage")
    chk = sub.add_parser("check", help="validate the config and reach the endpoints")
    common(chk)
    chk.add_argument("--from", dest="start", choices=STAGES)
    chk.add_argument("--to", dest="stop", choices=STAGES)
    for stage in STAGES:
        sp = sub.add_parser(stage, help=f"run the {stage} stage alone")
        common(sp)
        if stage != "collect":
            sp.add_argument("--input", type=Path, help="input table (default: in workdir)")
        sp.add_argument("--output", type=Path, help="output table (default: in workdir)")
        if stage == "select":
            sp.add_argument("--seed", type=int, help="override select.seed")
            sp.add_argument("--size", type=int, help="override select.size")
        if stage == "export":
            sp.add_argument("--layout", choices=("auto", "s1k", "s1k-1.1"))
    return p


def _configured(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if args.workdir:
        cfg = cfg.model_copy(update={"workdir": args.workdir.resolve(),
                                     "cache": args.workdir.resolve() / cfg.cache.name})
    if args.no_progress:
        cfg = cfg.model_copy(update={"progress": False})
    if args.concurrency:
        cfg = cfg.model_copy(update={"concurrency": max(1, args.concurrency)})
    select = {k: v for k in ("seed", "size") if (v := getattr(args, k, None)) is not None}
    if select:
        cfg = cfg.model_copy(update={"select": cfg.select.model_copy(update=select)})
    if getattr(args, "layout", None):
        cfg = cfg.model_copy(update={"export": cfg.export.model_copy(
            update={"layout": args.layout})})
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from datasets_build import pipeline

    try:
        cfg = _configured(args)
        if args.command == "check":
            stages = pipeline.stage_range(args.start, args.stop)
            pipeline.check(cfg, stages, None)
            print(f"ok: {', '.join(stages)}; endpoints "
                  f"{', '.join(e.name for e in cfg.endpoints_for(stages)) or 'none'}")
            return 0
        if args.command == "run":
            pipeline.run_pipeline(cfg, pipeline.stage_range(args.start, args.stop), args.input)
            return 0
        pipeline.run_pipeline(cfg, [args.command], getattr(args, "input", None), args.output)
        return 0
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"s1-data: error: {exc}", file=sys.stderr)
        return 2
    except EndpointError as exc:
        print(f"s1-data: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("s1-data: interrupted; finished model calls are cached, run the same command "
              "again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
