"""``streamsafe deploy render``: Kubernetes manifests from the contract and the settings;
``streamsafe acls``: the same ACLs for any Kafka cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from streamsafe.cli.base import cli, present
from streamsafe.errors import StreamSafeError
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.group()
def deploy() -> None:
    """Deployment manifests (Kubernetes, Strimzi, KEDA, Prometheus Operator)."""


@deploy.command("render")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory to write the manifests and kustomization.yaml to")
@click.option("--namespace", default="streamsafe", show_default=True)
@click.option("--image", help="worker image (default: streamsafe:<version>)")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True,
              help="workers (with autoscaling: the fewest KEDA keeps)")
@click.option("--cluster", default="kafka", show_default=True, help="the Strimzi Kafka resource's name")
@click.option("--bootstrap", help="host:port of its SCRAM listener (default: <cluster>-kafka-bootstrap, 9093)")
@click.option("--security-protocol", type=click.Choice(["SASL_SSL", "SASL_PLAINTEXT"]), default="SASL_SSL",
              show_default=True)
@click.option("--app-id", help="consumer group and table namespace (env STREAMSAFE_APP_ID)")
@click.option("--topic-prefix", help="prefix for every topic name (env STREAMSAFE_TOPIC_PREFIX)")
@click.option("--storage", default="10Gi", show_default=True, help="each worker's RocksDB volume")
@click.option("--storage-class", help="the volumes' storage class (default: the cluster's)")
@click.option("--runbook-base", envvar="STREAMSAFE_RUNBOOK_BASE", show_envvar=True,
              help="absolute URL where docs/runbook.md is published: the alerts link under it")
@click.option("--autoscale/--no-autoscale", default=True, show_default=True,
              help="a KEDA ScaledObject owns the worker count")
def deploy_render(out: Path, app_id: str | None, topic_prefix: str | None, **options: Any) -> None:
    """Write the Kubernetes manifests of a deployment to OUT (apply with kubectl apply -k OUT)."""
    from streamsafe.deploy import RenderOptions, write_manifests
    from streamsafe.events.contract import load_contract
    from streamsafe.roles import unassigned_topics

    try:
        settings = Settings.from_env(app_id=app_id, topic_prefix=topic_prefix)
        render = RenderOptions(settings, **present(options))
    except StreamSafeError as exc:
        raise click.UsageError(str(exc)) from exc
    contract = load_contract()
    for path in write_manifests(render, out, contract):
        click.echo(f"wrote {path}")
    for topic in unassigned_topics(contract):
        click.echo(f"warning: {topic}: say which roles own, read and write it in its topic file (access)", err=True)


@cli.command()
@click.option("--format", "output", type=click.Choice(["kafka-acls", "json"]), default="kafka-acls",
              show_default=True, help="kafka-acls.sh commands (a shell script), or JSON for automation")
@click.option("--app-id", help="the worker's consumer group, internal topic prefix and users' prefix "
                               "(env STREAMSAFE_APP_ID)")
@click.option("--topic-prefix", "--prefix", "topic_prefix",
              help="prefix for every topic name (env STREAMSAFE_TOPIC_PREFIX)")
def acls(output: str, app_id: str | None, topic_prefix: str | None) -> None:
    """Print the Kafka ACLs of every role (User:<app id>-<role>), from the topic files' access."""
    import orjson

    from streamsafe.deploy import RenderOptions
    from streamsafe.deploy.acls import acl_document, kafka_acls_script
    from streamsafe.events.contract import load_contract
    from streamsafe.roles import unassigned_topics

    try:
        options = RenderOptions(Settings.from_env(app_id=app_id, topic_prefix=topic_prefix))
    except StreamSafeError as exc:
        raise click.UsageError(str(exc)) from exc
    contract = load_contract()
    if output == "json":
        click.echo(orjson.dumps(acl_document(options, contract), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(kafka_acls_script(options, contract), nl=False)
    for topic in unassigned_topics(contract):
        click.echo(f"warning: {topic}: say which roles own, read and write it in its topic file (access)", err=True)
