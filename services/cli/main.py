"""Entry point of ``i2v``: parse arguments, dispatch, turn known errors into one line and an exit code."""

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from contracts.stages import Stage
from services.cli.errors import CliError

if TYPE_CHECKING:
    from services.config import Settings

SERVICE_NAMES = ("ingest", "billing", "latent", "decode", "mux", "webhooks", "gateway")
PRESETS = ("portrait", "landscape", "product", "auto")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the option and what is wrong with it.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="i2v", description="Turn a still image into a short video with Stable Video Diffusion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser(
        "generate",
        help="make a video from an image through the whole pipeline",
        description="Make a video from an image on a running stack (--stack DIR, --nats/--s3, or one answering "
        "from ./.i2v), else on an embedded stack started for this one job.",
        epilog=(
            "--stack DIR reads a running `i2v stack up --state-dir DIR`'s settings from DIR/stack.env. Servers "
            "named instead (--nats and --s3, or I2V_NATS_URL and I2V_S3_ENDPOINT) also need their S3 keys in "
            "I2V_S3_ACCESS_KEY and I2V_S3_SECRET_KEY; `i2v stack up` writes all of them to STATE/stack.env "
            "(`set -a; . .i2v/stack.env; set +a` exports them)."
        ),
    )
    gen.add_argument("image", type=Path, help="a JPEG, PNG or WebP picture")
    gen.add_argument(
        "-o", "--output", type=Path, default=Path("out.mp4"), help="where to write the video (.mp4, .webm, .gif, .webp)"
    )
    gen.add_argument("--duration", type=int, help="seconds, 1-8 (default 4)")
    gen.add_argument("--fps", type=int, help="frames per second, 4-24 (default 8)")
    gen.add_argument("--motion-bucket-id", type=int, help="motion strength, 1-255 (default 127)")
    gen.add_argument("--motion-prompt", help="describe the motion (recorded; SVD reads no text)")
    gen.add_argument("--augmentation-level", type=float, help="noise added to the image, 0-1 (default 0)")
    gen.add_argument("--steps", type=int, help="denoising steps, 1-50 (default 25)")
    gen.add_argument("--cfg-scale", type=float, help="max guidance of the linear ramp, 1-5 (default 2.5)")
    gen.add_argument("--seed", type=int, help="-1 picks one at random and reports it (default -1)")
    gen.add_argument(
        "--model", help="tiny, a local diffusers SVD folder, or a cached hub id (default I2V_MODEL or tiny)"
    )
    gen.add_argument("--resolution", help="WxH, multiples of 64 (default: the model's, aspect kept)")
    gen.add_argument("--interpolator", help="dis (optical flow, default) or rife (the stack's I2V_RIFE_WEIGHTS)")
    gen.add_argument("--loop", help="none (default), pingpong or crossfade; the frame count stays duration x fps")
    gen.add_argument("--format", help="mp4, webm, gif, webp or av1 (default: from the -o extension)")
    gen.add_argument("--quality", help="low, medium or high (default high)")
    gen.add_argument(
        "--stabilize", action="store_true", default=None, help="smooth the generated motion before the camera move"
    )
    gen.add_argument("--min-cfg", type=float, help="guidance on the first frame, 1 to --cfg-scale (default 1)")
    gen.add_argument("--fps-conditioning", type=int, help="fps SVD is told, 1-30 (default: from the frames)")
    gen.add_argument(
        "--preset",
        choices=PRESETS,
        help="fill the options not given from the picture: portrait, landscape, product, or auto to pick one"
        " (`i2v suggest IMAGE` shows what it would pick and why)",
    )
    gen.add_argument(
        "--variations",
        type=int,
        choices=range(1, 5),
        default=1,
        metavar="N",
        help="1-4 jobs of seeds seed, seed+1, ...; each charged; -o out.mp4 writes out.mp4, out-2.mp4, ...",
    )
    gen.add_argument("--account", default="", help="account charged (default: the local demo account)")
    gen.add_argument(
        "--webhook", metavar="URL", help="POST the job's events to this http(s) URL, signed (Standard Webhooks)"
    )
    gen.add_argument(
        "--webhook-events",
        metavar="LIST",
        help="comma-separated: started, preview, completed, failed, cancelled (default completed,failed,cancelled)",
    )
    gen.add_argument("--nats", help="NATS URL of a running stack (default: start the embedded one)")
    gen.add_argument(
        "--s3", help="S3 endpoint of a running stack; its keys come from I2V_S3_ACCESS_KEY and I2V_S3_SECRET_KEY"
    )
    gen.add_argument("--stack", type=Path, metavar="DIR", help="state folder of a running `i2v stack up` to submit to")
    gen.add_argument("--state-dir", type=Path, help="where the embedded stack keeps its data (default: a temp dir)")
    gen.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")

    suggest = sub.add_parser(
        "suggest",
        help="the preset a picture calls for, and the options it sets, each with a reason",
        description="Look at IMAGE (faces, a plain background, sky, water, greenery) and say which preset"
        " `i2v generate --preset` would apply and the options it would set, each with its reason.",
    )
    suggest.add_argument("image", type=Path, help="a JPEG, PNG or WebP picture")
    suggest.add_argument("--preset", choices=PRESETS, default="auto", help="the preset to resolve (default auto)")
    suggest.add_argument("--model", help="the model the video would be made with (default I2V_MODEL or tiny)")
    suggest.add_argument("--resolution", help="WxH the video would be made at (default: the model's, aspect kept)")
    suggest.add_argument("--json", action="store_true", help="print JSON, as POST /v1/suggest answers")

    interp = sub.add_parser(
        "interpolate",
        help="in-between frames for a video or two or more images, locally (no stack)",
        description="Interpolate INPUT (a video, or two or more images of one size) to OUTPUT: a video whose "
        "format its extension names, or a folder ending in / that receives 000000.png, 000001.png, ...",
    )
    interp.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="a video, or two or more images")
    interp.add_argument("-o", "--output", required=True, help="a .mp4/.webm/.gif/.webp file, or a folder/")
    how_many = interp.add_mutually_exclusive_group()
    how_many.add_argument("--count", type=int, help="frames out (default: one in-between per pair of images)")
    how_many.add_argument("--fps", type=int, help="frame rate out; a video keeps its duration")
    interp.add_argument(
        "--interpolator", default="dis", help="dis (default), rife (I2V_RIFE_WEIGHTS) or rife:PATH to flownet.pkl"
    )

    serve = sub.add_parser("serve", help="run one service against I2V_NATS_URL and I2V_S3_ENDPOINT")
    serve.add_argument("service", choices=SERVICE_NAMES)

    stack = sub.add_parser("stack", help="the embedded stack")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True, parser_class=_Parser)
    up = stack_sub.add_parser("up", help="run nats-server, SeaweedFS and every service in the foreground")
    up.add_argument(
        "--state-dir",
        type=Path,
        help="data folder; stack.env there tells other i2v commands where the stack runs "
        "(default I2V_STATE_DIR or ./.i2v)",
    )
    up.add_argument(
        "--nats-nodes",
        type=_nats_nodes,
        default=1,
        metavar="N",
        help="nats-server nodes: 1 (default), or a cluster of 3, 5 or 7 keeping every stream on 3 of them",
    )
    up.add_argument(
        "--gateways",
        type=int,
        default=1,
        metavar="N",
        help="gateway processes, each on a port of its own; more than one needs a PostgreSQL jobs index they "
        "share (I2V_LEDGER_DSN or I2V_INDEX_DSN=postgresql://...)",
    )
    up.add_argument(
        "--replicas",
        type=_replicas,
        default={},
        metavar="SERVICE=N[,SERVICE=N]",
        help="processes of a service sharing its work, each command to one of them (e.g. latent=2,decode=2); "
        "they split the service's threads",
    )
    nats_auth = stack_sub.add_parser(
        "nats-auth",
        help="users, passwords and permissions for a nats-server of your own (production)",
        description="Write DIR/nats-auth.conf (each user's bcrypt hash and permissions, for nats-server's config) "
        "and DIR/<user>.env (I2V_NATS_USER and I2V_NATS_PASSWORD of each service, the gateway, the client and "
        "the admin), all owner-only. Passwords already in DIR are kept unless --rotate names their user.",
    )
    nats_auth.add_argument("dir", type=Path)
    nats_auth.add_argument("--rotate", nargs="+", default=[], metavar="USER", help="give these users new passwords")
    stack_sub.add_parser(
        "streams",
        help="declare the streams and the cancel bucket (as the NATS admin: I2V_NATS_USER=admin)",
        description="Create or update the JetStream streams and the cancel bucket on I2V_NATS_URL, and sweep "
        "commands on unknown work subjects. Services may only look streams up: run this first on every release.",
    )

    jobs = sub.add_parser("jobs", help="cancel, replay or inspect jobs on a running stack")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=_Parser)
    cancel = jobs_sub.add_parser("cancel", help="stop a queued or running job; its points come back")
    cancel.add_argument("job")
    replay = jobs_sub.add_parser("replay", help="run a failed or cancelled job again from a stage")
    replay.add_argument("job")
    replay.add_argument("--from", dest="from_stage", choices=[s.value for s in Stage], help="default: where it stopped")
    show_job = jobs_sub.add_parser("show", help="the job's status, parameters, price, output and timings")
    show_job.add_argument("job")
    show_job.add_argument("--json", action="store_true", help="the job's raw event history as JSON")
    download = jobs_sub.add_parser("download", help="save the job's video")
    download.add_argument("job")
    download.add_argument("-o", "--output", type=Path, help="where to write it (default JOB.mp4, or the format's)")

    extend = jobs_sub.add_parser(
        "extend",
        help="continue a completed job's video from its last frame with a new job",
        description="Make a new job from JOB's last frame and write the whole video: JOB's frames, then the new"
        " ones (the shared frame once). Options not given are JOB's (a new random seed unless --seed); the model,"
        " fps, size, format and quality are always JOB's. Charged as the new segment alone.",
    )
    extend.add_argument("job")
    extend.add_argument("--duration", type=int, help="seconds to add, 1-8 (default: JOB's duration)")
    extend.add_argument("--seed", type=int, help="-1 picks one at random (default)")
    extend.add_argument("--steps", type=int, help="denoising steps, 1-50")
    extend.add_argument("--motion-bucket-id", type=int, help="motion strength, 1-255")
    extend.add_argument("--motion-prompt", help="describe the motion (recorded; SVD reads no text)")
    extend.add_argument("--augmentation-level", type=float, help="noise added to the picture, 0-1")
    extend.add_argument("--cfg-scale", type=float, help="max guidance of the linear ramp, 1-5")
    extend.add_argument("--min-cfg", type=float, help="guidance on the first frame, 1 to --cfg-scale")
    extend.add_argument("--fps-conditioning", type=int, help="fps SVD is told, 1-30")
    extend.add_argument("--interpolator", help="dis or rife")
    extend.add_argument("--stabilize", action="store_true", default=None, help="smooth the new segment's motion")
    extend.add_argument("-o", "--output", type=Path, help="where to write the whole video (default NEWJOB.mp4)")
    extend.add_argument("--account", default="", help="account charged; must own JOB (default: the demo account)")
    extend.add_argument("--webhook", metavar="URL", help="POST the new job's events here, signed")
    extend.add_argument("--webhook-events", metavar="LIST", help="as generate's --webhook-events")
    extend.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")

    dlq = sub.add_parser("dlq", help="dead letters: commands that exhausted their deliveries")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, parser_class=_Parser)
    dlq_list = dlq_sub.add_parser("list", help="every dead letter, oldest first")
    dlq_show = dlq_sub.add_parser("show", help="one dead letter in full")
    dlq_show.add_argument("id", type=int)
    dlq_replay = dlq_sub.add_parser("replay", help="replay the dead letter's job from its stage")
    dlq_replay.add_argument("id", type=int)
    for p in (cancel, replay, show_job, download, extend, dlq_list, dlq_show, dlq_replay):
        p.add_argument(
            "--state-dir", type=Path, help="state folder of the running stack (default I2V_STATE_DIR or ./.i2v)"
        )

    accounts = sub.add_parser("accounts", help="points accounts in the stack's ledger")
    acc_sub = accounts.add_subparsers(dest="accounts_command", required=True, parser_class=_Parser)
    create = acc_sub.add_parser("create", help="create an account")
    create.add_argument("name")
    create.add_argument("--points", type=int, default=0)
    credit = acc_sub.add_parser("credit", help="add points to an account")
    credit.add_argument("name")
    credit.add_argument("points", type=int)
    show = acc_sub.add_parser("show", help="balance and recent entries")
    show.add_argument("name")
    key = acc_sub.add_parser("key", help="issue a new API key for an account (the old one stops working)")
    key.add_argument("name")
    webhook_secret = acc_sub.add_parser(
        "webhook-secret", help="the account's webhook signing secret (whsec_...), made on first ask"
    )
    webhook_secret.add_argument("name")
    webhook_secret.add_argument("--rotate", action="store_true", help="replace it; later webhooks use the new one")
    for p in (create, credit, show, key, webhook_secret):
        p.add_argument(
            "--state-dir",
            type=Path,
            help="state folder whose ledger to use (default I2V_LEDGER_DSN, else I2V_STATE_DIR or ./.i2v)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # transformers announces at import that torchvision is absent; the CLI's stderr is for the user.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "suggest":
            return _suggest(args)
        if args.command == "interpolate":
            from services.cli.interpolate import run_interpolate

            return run_interpolate(
                args.inputs, args.output, count=args.count, fps=args.fps, interpolator=args.interpolator
            )
        if args.command == "serve":
            return _serve(args.service)
        if args.command == "stack":
            if args.stack_command == "nats-auth":
                return _nats_auth(args.dir, args.rotate)
            if args.stack_command == "streams":
                return _declare_streams()
            return _stack_up(args.state_dir, nats_nodes=args.nats_nodes, gateways=args.gateways, replicas=args.replicas)
        if args.command == "accounts":
            return _accounts(args)
        if args.command in ("jobs", "dlq"):
            return _operate(args)
    except CliError as exc:
        print(f"i2v: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("i2v: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a user gets one line, never a traceback; I2V_DEBUG=1 shows it
        if os.environ.get("I2V_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:500]
        print(f"i2v: error: unexpected {type(exc).__name__}: {text} (I2V_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


def _generate(args: argparse.Namespace) -> int:
    from services.cli.generate import (
        GenerateRequest,
        check_output,
        output_format,
        params_from,
        parse_resolution,
        run_generate,
        webhook_of,
    )
    from services.cli.settings import generate_settings

    logging.getLogger().setLevel(logging.WARNING)
    # generate starts its own stack unless told where one runs or one answers from the default state folder.
    settings, running = generate_settings(args.stack, args.nats, args.s3, args.state_dir)
    resolution = parse_resolution(args.resolution) if args.resolution else None
    check_output(args.output)  # before its extension is read as the format: a folder is named as one
    params = params_from(
        {
            "duration": args.duration,
            "fps": args.fps,
            "motion_bucket_id": args.motion_bucket_id,
            "motion_prompt": args.motion_prompt,
            "augmentation_level": args.augmentation_level,
            "steps": args.steps,
            "cfg_scale": args.cfg_scale,
            "seed": args.seed,
            "model": args.model or settings.model,
            "resolution": resolution,
            "interpolator": args.interpolator,
            "loop": args.loop,
            "format": output_format(args.output, args.format),
            "quality": args.quality,
            "stabilize": args.stabilize,
            "min_cfg": args.min_cfg,
            "fps_conditioning": args.fps_conditioning,
            "preset": args.preset,
        }
    )
    if bool(args.nats) != bool(args.s3):
        raise CliError("--nats and --s3 go together: give both to use a running stack, or neither")
    if params.interpolator == "rife" and not settings.nats_url and settings.rife_weights is None:
        # The embedded stack's decode stage reads I2V_RIFE_WEIGHTS from here; without it the job would fail.
        raise CliError("--interpolator rife: set I2V_RIFE_WEIGHTS to RIFE's flownet.pkl (or its folder)")
    webhook = webhook_of(args.webhook, args.webhook_events, settings)
    request = GenerateRequest(args.image, args.output, params, args.account, args.timeout, webhook, args.variations)
    if running is not None and args.stack is None:
        print(f"using the stack running from {running} (--state-dir DIR starts one of its own)", file=sys.stderr)
    return run_generate(request, settings, embedded_state=args.state_dir)


def _suggest(args: argparse.Namespace) -> int:
    from services.cli.generate import parse_resolution
    from services.cli.settings import load_settings
    from services.cli.suggest import run_suggest

    resolution = parse_resolution(args.resolution) if args.resolution else None
    model = args.model or load_settings(from_stack_file=False).model
    return run_suggest(args.image, preset=args.preset, model=model, resolution=resolution, as_json=args.json)


def _serve(service: str) -> int:
    import asyncio
    import importlib

    from services.cli.settings import load_settings

    settings = load_settings(from_stack_file=False)
    try:
        settings.require_connections()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if settings.log_file is not None:
        from services.service_log import configure_service_log

        configure_service_log(settings.log_file, settings.log_max_bytes, settings.log_backups)
    if service == "gateway":
        from services.gateway.server import serve

        return serve(settings)
    module = importlib.import_module(f"services.{service}.app")
    app = module.build_app(settings)
    asyncio.run(app.run())
    return 0


def _nats_nodes(text: str) -> int:
    """1, or an odd cluster size: JetStream needs a majority of the nodes up, and a fourth adds no tolerance."""
    try:
        nodes = int(text)
    except ValueError:
        nodes = 0
    if nodes not in (1, 3, 5, 7):
        raise argparse.ArgumentTypeError(f"{text!r}: give 1, or 3, 5 or 7 for a cluster")
    return nodes


def _replicas(text: str) -> dict[str, int]:
    from services.stack.embedded import parse_replicas

    try:
        return parse_replicas(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stack_up(
    state_dir: Path | None, *, nats_nodes: int = 1, gateways: int = 1, replicas: dict[str, int] | None = None
) -> int:
    from services.cli.settings import state_folder
    from services.stack.embedded import LOCAL_ACCOUNT, WITH_GATEWAY, EmbeddedStack
    from services.stack.state_file import public_settings, stack_file

    state_dir = state_folder(state_dir)

    stopping = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stack = EmbeddedStack(
        state_dir,
        services=WITH_GATEWAY,
        nats_nodes=nats_nodes,
        gateways=gateways,
        replicas=replicas or {},
        say=lambda line: print(line, flush=True),
    )
    try:
        stack.start()
    except ValueError as exc:  # a setting the stack cannot run with: one line, as the arguments' errors
        raise CliError(str(exc)) from None
    try:
        settings_file = stack_file(stack.state_dir)
        for line in public_settings(stack.env()):
            print(line)
        print(
            f"settings for i2v commands, secrets included: {settings_file} (owner-only; i2v commands read it "
            f"from the state folder, `set -a; . {settings_file}; set +a` exports it)",
            flush=True,
        )
        for url in stack.gateway_urls:
            print(f"web page and API: {url}", flush=True)
        for name, url in stack.metrics_urls.items():
            print(f"metrics {name}: {url}", flush=True)
        print(f"an API key for the page: i2v accounts key {LOCAL_ACCOUNT} --state-dir {state_dir}", flush=True)
        print("stack up; Ctrl-C stops everything", flush=True)
        while not stopping:
            stack.supervise()
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped", flush=True)
    return 0


def _nats_auth(folder: Path, rotate: list[str]) -> int:
    from services.stack.nats_auth import ROUTE, USERS, write_nats_auth

    unknown = sorted(set(rotate) - {*USERS, ROUTE})
    if unknown:
        raise CliError(f"--rotate: no user {', '.join(unknown)} (users: {', '.join((*USERS, ROUTE))})")
    conf = write_nats_auth(folder, rotate)
    print(f"nats-server authorization: {conf} (include it in the server's config; it holds hashes only)")
    print(f"each user's settings: {folder}/<user>.env (owner-only; give each process its own)")
    print(
        f"a cluster's routes: include {folder}/nats-route-auth.conf in each node's cluster block; route URLs "
        f"log in as nats-route://{ROUTE}:PASSWORD@host:port with the password in {folder}/{ROUTE}.env"
    )
    return 0


def _declare_streams() -> int:
    import asyncio

    import nats
    import nats.errors

    from services.bus.connection import nats_options, nats_servers
    from services.bus.streams import StreamReplicasError, ensure_streams
    from services.cli.settings import load_settings

    settings = load_settings(from_stack_file=False)
    if not settings.nats_url:
        raise CliError("I2V_NATS_URL is not set")
    try:
        servers = nats_servers(settings.nats_url)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def declare() -> None:
        nc = await nats.connect(servers, allow_reconnect=False, connect_timeout=5, **nats_options(settings))
        try:
            await ensure_streams(nc.jetstream(), settings.stream_replicas)
        finally:
            await nc.close()

    try:
        asyncio.run(declare())
    except (OSError, TimeoutError, StreamReplicasError, nats.errors.Error) as exc:
        raise CliError(f"NATS at {settings.nats_url}: {' '.join(str(exc).split()) or type(exc).__name__}", 1) from None
    print(f"streams and cancel bucket declared on {settings.nats_url} ({settings.stream_replicas} replica(s))")
    return 0


def _extend(args: argparse.Namespace, settings: "Settings") -> int:
    from contracts.extension import EXTENSION_CHANGES
    from services.cli import jobs
    from services.cli.generate import webhook_of
    from services.stack.embedded import LOCAL_ACCOUNT

    # The options are named after the parameters an extension may set, and only those given are changes.
    changes = {name: getattr(args, name) for name in EXTENSION_CHANGES if getattr(args, name) is not None}
    webhook = webhook_of(args.webhook, args.webhook_events, settings)
    return jobs.extend_job(
        settings,
        args.job,
        changes,
        account=args.account or LOCAL_ACCOUNT,
        output=args.output,
        webhook=webhook,
        timeout_s=args.timeout,
    )


def _operate(args: argparse.Namespace) -> int:
    from services.cli import jobs
    from services.cli.settings import load_settings, require_stack

    settings = load_settings(args.state_dir)
    require_stack(settings, args.state_dir)
    if args.command == "jobs":
        if args.jobs_command == "cancel":
            return jobs.cancel_job(settings, args.job)
        if args.jobs_command == "replay":
            return jobs.replay_job(settings, args.job, Stage(args.from_stage) if args.from_stage else None)
        if args.jobs_command == "download":
            return jobs.download_job(settings, args.job, args.output)
        if args.jobs_command == "extend":
            return _extend(args, settings)
        return jobs.show_job(settings, args.job, as_json=args.json)
    if args.dlq_command == "list":
        return jobs.dlq_list(settings)
    if args.dlq_command == "show":
        return jobs.dlq_show(settings, args.id)
    return jobs.dlq_replay(settings, args.id)


def _accounts(args: argparse.Namespace) -> int:
    import psycopg

    from contracts.messages import is_account_name
    from services.billing.ledger import (
        AccountExistsError,
        InvalidAccountNameError,
        LedgerNotFoundError,
        UnknownAccountError,
        open_ledger,
    )
    from services.cli.settings import load_settings
    from services.gateway.auth import hash_api_key, new_api_key

    if args.accounts_command == "create":
        # Checked before the ledger is opened: a name no job could carry, or a negative balance, is refused
        # whatever the ledger holds.
        if not is_account_name(args.name):
            raise CliError(str(InvalidAccountNameError(args.name)))
        if args.points < 0:
            raise CliError(f"--points must be 0 or more, got {args.points}")
    settings = load_settings(args.state_dir)
    dsn = settings.resolved_ledger_dsn()
    try:
        # Never create one here: a ledger appears where a stack runs, not wherever the command is typed.
        ledger = open_ledger(dsn, create=False)
    except LedgerNotFoundError:
        raise CliError(
            f"no ledger found at {dsn}; run the command where `i2v stack up` ran, "
            "or point at one with --state-dir or I2V_LEDGER_DSN",
            1,
        ) from None
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CliError(f"cannot reach the PostgreSQL ledger (I2V_LEDGER_DSN): {reason}", 1) from None
    try:
        if args.accounts_command == "create":
            key = new_api_key()
            ledger.create_account(args.name, args.points, api_key_hash=hash_api_key(key))
            print(f"account {args.name} created with {args.points} points")
            print(f"API key (shown once, keep it): {key}")
        elif args.accounts_command == "key":
            key = new_api_key()
            ledger.set_api_key_hash(args.name, hash_api_key(key))
            print(f"new API key for {args.name} (shown once; the old one no longer works): {key}")
        elif args.accounts_command == "webhook-secret":
            secret = ledger.webhook_secret(args.name, rotate=args.rotate)
            print(f"{'new ' if args.rotate else ''}webhook secret of {args.name}: {secret}")
        elif args.accounts_command == "credit":
            if args.points <= 0:
                raise CliError(f"points must be positive, got {args.points}")
            balance = ledger.credit(args.name, args.points, note="i2v accounts credit")
            print(f"account {args.name}: +{args.points} points, balance {balance}")
        else:
            print(f"account {args.name}: balance {ledger.balance(args.name)} points")
            for entry in ledger.entries(args.name, limit=10):
                job = f"job {entry.job_id} g{entry.generation}" if entry.job_id else ""
                when = f"{entry.created_at:%Y-%m-%d %H:%M:%S}"
                print(f"  {when}  {entry.kind:<7} {entry.points:+6d}  {job}  {entry.note}")
    except AccountExistsError:
        raise CliError(f"account {args.name!r} already exists") from None
    except UnknownAccountError:
        raise CliError(f"no account named {args.name!r}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
