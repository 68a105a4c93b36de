// Package domain holds opsgate's rules, free of databases and transports:
// the ProtectedScope decider (Decide/Evolve), the registries of operations,
// surfaces, capabilities and reasons, the readiness preflight and the one
// presenter that words every start result and run for operators.
package domain
