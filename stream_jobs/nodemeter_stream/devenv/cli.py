"""``nodemeter dev kafka up|down|status|reset`` and ``nodemeter dev registry build|up|down|status``."""

from __future__ import annotations

import argparse
import json

from nodemeter_stream.devenv import kafka, schema_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="service", required=True)
    k = sub.add_parser("kafka", help="a single-node Apache Kafka broker (KRaft) on loopback")
    k.add_argument("action", choices=["up", "down", "status", "reset"])
    k.add_argument("--port", type=int, help="client port (default 19092 or NODEMETER_KAFKA_PORT)")
    k.add_argument("--controller-port", type=int, help="KRaft controller port (default port+1)")
    k.add_argument("--dir", help="data and log directory (default .nodemeter/kafka)")
    r = sub.add_parser(
        "registry",
        help="Apicurio Registry (in memory) on loopback, Confluent-compatible API at "
        "/apis/ccompat/v7",
    )
    r.add_argument("action", choices=["build", "up", "down", "status"])


def _config(args: argparse.Namespace) -> kafka.KafkaDevConfig:
    base = kafka.KafkaDevConfig.from_env()
    kwargs: dict[str, object] = {}
    if args.port:
        kwargs["port"] = args.port
        kwargs["controller_port"] = args.controller_port or args.port + 1
    elif args.controller_port:
        kwargs["controller_port"] = args.controller_port
    if args.dir:
        from pathlib import Path

        kwargs["home"] = Path(args.dir).resolve()
    if not kwargs:
        return base
    fields = {
        "host": base.host,
        "port": base.port,
        "controller_port": base.controller_port,
        "home": base.home,
        "cache_dir": base.cache_dir,
    } | kwargs
    return kafka.KafkaDevConfig(**fields)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    if args.service == "registry":
        return _run_registry(args.action)
    cfg = _config(args)
    if args.action == "up":
        print(kafka.up(cfg))
    elif args.action == "down":
        kafka.down(cfg)
    elif args.action == "reset":
        kafka.reset(cfg)
    else:
        st = kafka.status(cfg)
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 3
    return 0


def _run_registry(action: str) -> int:
    cfg = schema_registry.SchemaRegistryDevConfig.from_env()
    if action == "build":
        print(schema_registry.build(cfg))
    elif action == "up":
        print(schema_registry.up(cfg))
    elif action == "down":
        schema_registry.down(cfg)
    else:
        st = schema_registry.status(cfg)
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 3
    return 0
