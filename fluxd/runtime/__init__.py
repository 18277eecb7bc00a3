"""The machinery shared by all controllers: queue, cache, reconcile loop, status, leader
election, manager. Knows Flux kinds only through ``fluxd.api``."""
