"""Alerts: `kai alerts set --webhook URL` — a Prefect notification block and two automations.

1. A run of an alerting mode (health, etcd_backup, certs) ends FAILED or CRASHED → the block is
   sent a message naming the cluster (the run's spec),
   the mode, the run (name, id, UI link) and its state message — for health that is the verify
   step's "failing checks: …" with each check's error.
2. A health or certs run finds a certificate with fewer than CERT_WARN_DAYS days left: the flow
   emits the event `kai.certificate.expiring` (tasks/verify.py; certs: one per node's certificate) → the block is sent which certificate, of
   which cluster, and when it expires.

Both automations run in the Prefect server (its event triggers and actions services), so the
alert arrives whether the run ended in kai serve's runner, on a worker, or was marked Crashed by
the reaper. The block is Prefect's "Custom Webhook" notification block (a JSON POST); any other
notification block (Slack, e-mail, …) made in the UI can be named with `--block` instead.
"""

from __future__ import annotations

from installers.cluster_check import CERT_EXPIRING_EVENT, CERT_WARN_DAYS

ALERTING_MODES = ("health", "etcd_backup", "certs")  # by name: a mode not in the table never fires
BLOCK_NAME = "kai-alerts"
RUN_AUTOMATION = "kai: alert on failed or crashed runs"
CERT_AUTOMATION = "kai: alert on certificates about to expire"

RUN_SUBJECT = "kai: {{ flow.name }} run of cluster {{ flow_run.parameters.spec.name }} {{ flow_run.state.name }}"
RUN_BODY = ("kai alert: cluster {{ flow_run.parameters.spec.name }}, mode {{ flow.name }}, "
            "run {{ flow_run.name }} ({{ flow_run.id }}) ended {{ flow_run.state.name }}\n"
            "{{ flow_run.state.message }}")
CERT_SUBJECT = "kai: cluster {{ event.payload.cluster }}: a certificate expires in {{ event.payload.days_left }} days"
CERT_BODY = ("kai alert: cluster {{ event.payload.cluster }}, run {{ event.payload.run_name }} "
             "({{ event.payload.run_id }}): {{ event.payload.certificate }} expires on "
             "{{ event.payload.expires }} ({{ event.payload.days_left }} days left, alert under "
             f"{CERT_WARN_DAYS}); renew it (kubeadm certs renew)")


def webhook_block(url: str):
    """A Custom Webhook notification block POSTing {subject, body} as JSON to `url`."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook: {url!r} is not an http(s) URL")
    return CustomWebhookNotificationBlock(
        name=BLOCK_NAME, url=url, method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "kai"})


def _automations(block_id, modes: tuple[str, ...]):
    from prefect.automations import AutomationCore
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    runs = AutomationCore(
        name=RUN_AUTOMATION,
        description=f"a run of {', '.join(modes)} ended Failed or Crashed: tell {BLOCK_NAME}",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": list(modes)}),
            posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=RUN_SUBJECT, body=RUN_BODY)])
    certs = AutomationCore(
        name=CERT_AUTOMATION,
        description=f"a health run found a certificate under {CERT_WARN_DAYS} days: tell {BLOCK_NAME}",
        trigger=EventTrigger(expect={CERT_EXPIRING_EVENT},
                             match=ResourceSpecification({"prefect.resource.id": "kai.cluster.*"}),
                             posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=CERT_SUBJECT, body=CERT_BODY)])
    return [runs, certs]


def set_alerts(*, webhook: str | None = None, block: str | None = None,
               modes: tuple[str, ...] = ALERTING_MODES) -> dict:
    """Point kai's alerts at a webhook (a block named kai-alerts, overwritten) or at an existing
    notification block; (re)creates both automations. Idempotent."""
    from prefect.client.orchestration import get_client

    if (webhook is None) == (block is None):
        raise ValueError("alerts: name exactly one of webhook (a URL) or block (a notification block)")
    with get_client(sync_client=True) as client:
        if webhook is not None:
            block_id = webhook_block(webhook).save(BLOCK_NAME, overwrite=True, client=client)
            block_name = BLOCK_NAME
        else:
            block_id, block_name = _block_by_name(client, block).id, block
        for automation in _automations(block_id, tuple(modes)):
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            client.create_automation(automation)
    return {"block": block_name, "block_id": str(block_id), "modes": list(modes),
            "automations": [RUN_AUTOMATION, CERT_AUTOMATION]}


def _block_by_name(client, name: str):
    from prefect.client.schemas.filters import BlockDocumentFilter, BlockDocumentFilterName

    found = client.read_block_documents(block_document_filter=BlockDocumentFilter(
        name=BlockDocumentFilterName(any_=[name])))
    if not found:
        raise ValueError(f"block: no notification block named {name!r} on the Prefect server")
    return found[0]


def show_alerts() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = {a.name: a for name in (RUN_AUTOMATION, CERT_AUTOMATION)
                 for a in client.read_automations_by_name(name)}
    return {"automations": [{"name": n, "enabled": a.enabled} for n, a in found.items()]}


def clear_alerts() -> list[str]:
    from prefect.client.orchestration import get_client

    removed = []
    with get_client(sync_client=True) as client:
        for name in (RUN_AUTOMATION, CERT_AUTOMATION):
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
                removed.append(name)
    return removed
