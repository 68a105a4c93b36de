package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
)

// Job is one execution of an accepted run against its pinned connection.
type Job struct {
	RunID      string
	Type       string
	Connection connections.Connection
	// Attempt counts from 1; it grows when a throttled call is retried.
	Attempt int
}

// Provider executes operations against one kind of provider connection.
type Provider interface {
	Execute(ctx context.Context, job Job) error
}

// ProviderError is a failure the provider reported, with its reason.
type ProviderError struct {
	Reason domain.ReasonCode
}

func (e *ProviderError) Error() string { return "provider: " + string(e.Reason) }

// ErrThrottled means the provider asked us to slow down; the call is retried
// with backoff and, past the retries, fails with provider.throttled.
var ErrThrottled = errors.New("provider throttled the call")

// Simulated behaves as the connection's simulation settings say: it
// waits latency_ms, throttles the first throttle_times attempts, then
// fails with fail_with or succeeds. It honours cancellation.
type Simulated struct{}

// Execute runs the simulated operation.
func (Simulated) Execute(ctx context.Context, job Job) error {
	sim := job.Connection.Simulation
	if sim == nil {
		sim = &domain.Simulation{}
	}
	if sim.LatencyMS > 0 {
		t := time.NewTimer(time.Duration(sim.LatencyMS) * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if job.Attempt <= sim.ThrottleTimes {
		return ErrThrottled
	}
	if sim.FailWith != nil {
		if *sim.FailWith == domain.ReasonThrottled {
			return ErrThrottled
		}
		return &ProviderError{Reason: *sim.FailWith}
	}
	return nil
}

// Providers selects a provider by the connection's provider name.
type Providers map[string]Provider

func (p Providers) lookup(name string) (Provider, error) {
	if pr, ok := p[name]; ok {
		return pr, nil
	}
	return nil, fmt.Errorf("no adapter for provider %q", name)
}
