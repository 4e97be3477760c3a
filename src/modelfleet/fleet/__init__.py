"""Fleets: plan many models onto server groups, run them locally under a supervisor behind one router,
or render and apply them to Kubernetes. Import the submodules you need; this package imports nothing."""
