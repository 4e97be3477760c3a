"""Check id → its function. Every check in checks.yaml has exactly one entry here (a test holds both to it)."""

from __future__ import annotations

from collections.abc import Callable

from modelfleet.review import check_kube, check_kube_security, check_live, check_retrain, check_saved
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import Outcome

CheckFunction = Callable[[ReviewInputs], Outcome]

CHECK_FUNCTIONS: dict[str, CheckFunction] = {
    name: getattr(module, name)
    for module, names in (
        (
            check_kube,
            "replicas_two_or_more probes_present disruption_budget autoscaler_present zone_spread server_side_routing "
            "alert_rules versions_pinned",
        ),
        (
            check_kube_security,
            "auth_enabled network_policy secrets_not_in_configmaps non_root no_privilege_escalation capabilities_dropped "
            "no_service_account_token tls_enabled image_not_latest image_digest_pinned",
        ),
        (
            check_saved,
            "previous_version_kept lineage_complete signatures_present registry_verify_clean recent_export "
            "overload_fast_refusal kill_healed heal_notified bench_at_slo tune_priced drift_fresh",
        ),
        (check_retrain, "retraining_gated"),
        (
            check_live,
            "live_unauthenticated_refused live_out_of_scope_refused live_malformed_refused live_tls_offered "
            "live_served_matches_registry",
        ),
    )
    for name in names.split()
}
