"""`modelfleet review`: Well-Architected questions answered from evidence (config, saved results, behaviour).

Checks are data (checks.yaml) plus one small pure function each; collectors gather evidence (spec,
rendered or given manifests, registry, saved results, live probes, drills); the engine judges and the
outputs write JSON, SARIF 2.1.0, HTML and an AWS Well-Architected custom lens with its answers.
"""
