"""Operating a fleet: availability events, their notification, SLO alerts and rollouts."""
