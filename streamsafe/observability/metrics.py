"""StreamSafe's domain metrics: one typed bundle created against a registry.

Units are in the names; buckets are chosen for what each histogram measures.
Label values are bounded sets (topics, reasons, actions, priorities, bank names,
policy versions, classifier names): never hashes, stream ids or user ids.
Hot-path counters are bound to their labels once, so an event costs one ``inc``.

The labelled series that alerts watch start at 0 (:meth:`StreamSafeMetrics.start_at_zero`):
a counter first seen at 1 after a restart has no earlier sample for ``increase()`` to
compare with, so the first breach after a restart would never fire. The process's own
``process_*`` metrics (CPU, memory, open files, start time) are in the same registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY, REVIEW_VERDICTS
from streamsafe.events.dead_letter import DEAD_LETTER_REASONS
from streamsafe.events.values import Priority

__all__ = ["LATENCY_BUCKETS", "PROCESS_METRICS", "StreamSafeMetrics", "lag"]

# decision latency: most decisions within milliseconds; the SLO sits around 50 ms,
# broker or rebalance trouble shows up in seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: the topics whose records change what workers decide for every stream (verdicts: for one stream)
CONTROL_TOPICS = (POLICY, HASHBANK_ENTRIES, REVIEW_VERDICTS)
STATE_BYTES_BUCKETS = (64, 128, 256, 512, 1024, 1536, 2048, 4096, 8192)
#: what prometheus_client's process collector exports (on Linux)
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_start_time_seconds", "process_open_fds", "process_max_fds")


def lag(highwater: int, committed: int | None) -> int:
    """Records behind on a partition (``None``: never committed, counted from zero)."""
    return max(0, highwater - (committed or 0))


@dataclass(frozen=True)
class StreamSafeMetrics:
    registry: CollectorRegistry
    input_messages: Counter
    decisions: Counter
    shadow_decisions: Counter
    event_to_decision: Histogram
    record_to_decision: Histogram
    hash_matches: Counter
    bank_entries: Gauge
    bank_last_update: Gauge
    bank_entries_rejected: Counter
    policy_info: Gauge
    policies_refused: Counter
    control_refused: Counter
    state_writes: Counter
    state_bytes: Histogram
    active_streams: Gauge
    table_recovered: Gauge
    consumer_lag: Gauge
    rebalances: Counter
    worker_up: Gauge
    ready: Gauge
    last_input: Gauge
    review_verdicts: Counter
    appeals: Counter
    false_positives: Counter
    sla_breaches: Counter
    reports: Counter
    stalled: Gauge
    delivery_failures: Counter
    producer_renewals: Counter
    allow_effects: Counter
    prefilter_matches: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> StreamSafeMetrics:
        r = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=r)
        return cls(
            registry=r,
            input_messages=Counter("streamsafe_input_messages", "Input records by topic and outcome "
                                   "(accepted, or dead-lettered with its reason)",
                                   ["topic", "outcome", "reason"], registry=r),
            decisions=Counter("streamsafe_decisions", "Decisions emitted by the live policy",
                              ["action", "priority"], registry=r),
            shadow_decisions=Counter("streamsafe_shadow_decisions", "Would-be decisions of shadow policies",
                                     ["policy_version", "action"], registry=r),
            event_to_decision=Histogram("streamsafe_event_to_decision_seconds",
                                        "From the triggering event's own time to the decision being sent",
                                        ["action"], buckets=LATENCY_BUCKETS, registry=r),
            record_to_decision=Histogram("streamsafe_record_to_decision_seconds",
                                         "From the triggering record's broker timestamp to the decision "
                                         "being acknowledged (the part StreamSafe controls)",
                                         ["action"], buckets=LATENCY_BUCKETS, registry=r),
            hash_matches=Counter("streamsafe_hash_matches", "Frame matches by bank and signal type",
                                 ["bank", "signal_type"], registry=r),
            bank_entries=Gauge("streamsafe_bank_entries", "Live entries per bank and signal type",
                               ["bank", "signal_type"], registry=r),
            bank_last_update=Gauge("streamsafe_bank_last_update_timestamp_seconds",
                                   "When any bank last changed on this worker", registry=r),
            bank_entries_rejected=Counter("streamsafe_bank_entries_rejected",
                                          "Corrupt hashbank.entries records (dead-lettered)", ["reason"],
                                          registry=r),
            policy_info=Gauge("streamsafe_policy_info", "Policies in force (1 per live or shadow policy)",
                              ["role", "version"], registry=r),
            policies_refused=Counter("streamsafe_policies_refused", "Invalid policies refused", registry=r),
            control_refused=Counter("streamsafe_control_refused", "Control records (policies, bank entries, "
                                    "review verdicts) refused and dead-lettered, by topic and reason",
                                    ["topic", "reason"], registry=r),
            state_writes=Counter("streamsafe_state_writes", "Per-stream state table writes", registry=r),
            state_bytes=Histogram("streamsafe_stream_state_bytes", "Size of a stream's state when written",
                                  buckets=STATE_BYTES_BUCKETS, registry=r),
            active_streams=Gauge("streamsafe_active_streams", "Streams with state on this worker",
                                 registry=r),
            table_recovered=Gauge("streamsafe_table_recovery_complete",
                                  "1 once the state table is recovered from its changelog", registry=r),
            consumer_lag=Gauge("streamsafe_consumer_lag_messages",
                               "Records behind the end of each assigned input partition (end - committed)",
                               ["topic", "partition"], registry=r),
            rebalances=Counter("streamsafe_rebalances", "Consumer group rebalances seen by this worker",
                               registry=r),
            worker_up=Gauge("streamsafe_worker_up", "1 while the worker process runs", registry=r),
            ready=Gauge("streamsafe_ready", "1 when partitions are assigned, tables recovered, "
                        "policies and banks loaded", registry=r),
            last_input=Gauge("streamsafe_last_input_timestamp_seconds", "When an input record last arrived",
                             ["topic"], registry=r),
            review_verdicts=Counter("streamsafe_review_verdicts", "Reviewer verdicts by outcome",
                                    ["outcome"], registry=r),
            appeals=Counter("streamsafe_appeals", "Appeals received, by what became of them (appeal_opened, "
                            "duplicate_appeal, appeal_merged)", ["outcome"], registry=r),
            false_positives=Counter("streamsafe_false_positives", "Escalations reviewers found benign, "
                                    "by the classifier that contributed most", ["classifier"], registry=r),
            sla_breaches=Counter("streamsafe_review_sla_breaches",
                                 "Escalations not reviewed within their SLA", ["priority"], registry=r),
            reports=Counter("streamsafe_reports", "Authority reports emitted (one sent again, completed, "
                                              "counts once)", ["incident_type"], registry=r),
            stalled=Gauge("streamsafe_stalled", "1 while this worker is stalled for the cause: an agent not "
                          "running (agent), a record in hand too long (record), deliveries failing "
                          "(delivery), lag without a commit (progress)", ["cause"], registry=r),
            delivery_failures=Counter("streamsafe_delivery_failures", "Sends that timed out or were refused "
                                      "(each is sent again)", registry=r),
            producer_renewals=Counter("streamsafe_producer_renewals", "Publishing producers replaced because "
                                      "they could no longer deliver, by cause (SenderStopped, or the broker's "
                                      "refusal of their producer id or sequence numbers)", ["cause"], registry=r),
            allow_effects=Counter("streamsafe_allow_bank_effects", "Matches allow banks cleared (cleared), and "
                                  "strong authority matches that stood against an allow match (overruled)",
                                  ["effect"], registry=r),
            prefilter_matches=Counter("streamsafe_prefilter_matches", "Matches the frame pre-filter forwarded, "
                                      "by where they were stepped on: in the pre-filter's process (in_process) "
                                      "or by the agent reading the forward (by_agent)", ["applied"], registry=r),
        )

    def start_at_zero(self, input_topics: Iterable[str], incident_types: Iterable[str],
                      verdict_outcomes: Iterable[str], stall_causes: Iterable[str]) -> None:
        """Create, at 0, every labelled series an alert or a dashboard rate is computed from."""
        for topic in input_topics:
            self.input_messages.labels(topic, "accepted", "")
            for reason in DEAD_LETTER_REASONS:
                self.input_messages.labels(topic, "dead_lettered", reason)
        for reason in DEAD_LETTER_REASONS:
            self.bank_entries_rejected.labels(reason)
        for priority in Priority:
            self.sla_breaches.labels(priority.value)
        for incident_type in incident_types:
            self.reports.labels(incident_type)
        for outcome in verdict_outcomes:
            self.review_verdicts.labels(outcome)
        for cause in stall_causes:
            self.stalled.labels(cause).set(0)
        for effect in ("cleared", "overruled"):
            self.allow_effects.labels(effect)
        for topic in CONTROL_TOPICS:
            self.control_refused.labels(topic, "bad_signature")
        self.control_refused.labels(CONTROL_TOPICS[-1], "no_open_escalation")

    def names(self) -> set[str]:
        """Every sample name this bundle exports (for checking dashboards and alerts)."""
        out: set[str] = set(PROCESS_METRICS)
        for f in fields(self):
            metric = getattr(self, f.name)
            if f.name == "registry":
                continue
            for family in metric.describe():
                base = family.name
                if family.type == "counter":
                    out.update({f"{base}_total", f"{base}_created"})
                elif family.type == "histogram":
                    out.update({f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"})
                else:
                    out.add(base)
        return out
