"""Deployments: rolling a task version out to a fleet under a targeting and rollout policy."""
