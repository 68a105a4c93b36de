// Package deploy holds what a monitoring team loads beside opsgate:
// Prometheus alert rules with their unit tests (prometheus/) and a Grafana
// dashboard (grafana/). It has no code; its tests check both with the
// tools that will load them and against a live /metrics scrape.
package deploy
