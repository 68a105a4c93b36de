package executorclient

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Handler runs one claimed run and says how it ended. Its context ends
// when the lease is lost (the run was cancelled or reaped): it should then
// stop, and nothing it returns counts.
type Handler func(ctx context.Context, c Claim) Result

// Runner claims runs and runs them until its context ends.
type Runner struct {
	Client  *Client
	Handler Handler
	// Concurrency bounds the handlers running at once (default 1); a run
	// whose handler returned is reported beside the next one.
	Concurrency int
	// Wait is how long a claim waits for work when none is queued
	// (default 20s; the server allows up to 30s).
	Wait time.Duration
	// Backoff is the first pause after a 5xx answer or a network error; it
	// doubles up to MaxBackoff (defaults 200ms and 10s).
	Backoff, MaxBackoff time.Duration
	// Logger logs what went wrong (default: nothing).
	Logger *slog.Logger
	// Tracer starts the span of each run, linked to the trace of the
	// start that created it (default: the global OpenTelemetry provider's,
	// which records nothing until the application installs an SDK).
	Tracer trace.Tracer
}

// Run claims and handles runs until ctx ends. It then stops claiming,
// lets the runs in hand finish and reports them, and returns nil; it
// returns an error only for a refusal no retry can mend (a revoked token,
// say).
func (r *Runner) Run(ctx context.Context) error {
	r.defaults()
	slots := make(chan struct{}, r.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := r.Backoff
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}: // a free slot: claim at most as many as are free
		case <-ctx.Done():
			return nil
		}
		free := 1
		for len(slots) < cap(slots) {
			slots <- struct{}{}
			free++
		}
		claims, err := r.Client.Claim(ctx, free, r.Wait)
		for range free - len(claims) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !temporary(err) {
				return err
			}
			r.Logger.Warn("claiming failed; backing off", "err", err, "backoff", backoff)
			sleep(ctx, backoff)
			backoff = min(2*backoff, r.MaxBackoff)
			continue
		}
		backoff = r.Backoff
		for _, c := range claims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The slot is freed once the handler has returned: reporting
				// the result (under the same lease) goes on beside the next
				// run's handler.
				var once sync.Once
				release := func() { once.Do(func() { <-slots }) }
				defer release()
				r.handle(context.WithoutCancel(ctx), c, release)
			}()
		}
	}
	return nil
}

func (r *Runner) defaults() {
	if r.Concurrency < 1 {
		r.Concurrency = 1
	}
	if r.Wait <= 0 {
		r.Wait = 20 * time.Second
	}
	if r.Backoff <= 0 {
		r.Backoff = 200 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 10 * time.Second
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Tracer == nil {
		r.Tracer = otel.Tracer("github.com/opsgate/opsgate/executorclient")
	}
}

// handle runs one claim: the handler under a heartbeat (then handled),
// then the completion, retried while the lease holds.
func (r *Runner) handle(ctx context.Context, c Claim, handled func()) {
	logger := r.Logger.With("run_id", c.Run.ID, "epoch", c.Lease.Epoch)
	// The run's span begins a trace of its own, linked to the start's: a
	// queued run is not part of the request that created it (as
	// otelriver does for River's jobs).
	ctx, span := r.Tracer.Start(ctx, "run "+c.Run.Type, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(linkTo(c.TraceContext)...), trace.WithAttributes(attribute.String("opsgate.run_id", c.Run.ID),
			attribute.String("opsgate.type", c.Run.Type), attribute.Int("opsgate.epoch", c.Lease.Epoch)))
	defer span.End()
	work, stop := context.WithCancel(ctx)
	defer stop()
	lost := make(chan struct{})
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		every := time.Duration(c.Lease.HeartbeatIntervalMs) * time.Millisecond
		if every <= 0 {
			every = 5 * time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
			}
			_, err := r.Client.Heartbeat(work, c.Run.ID, c.Lease.Epoch)
			if errors.Is(err, ErrLeaseLost) {
				close(lost)
				stop()
				return
			}
			if err != nil && work.Err() == nil {
				logger.Warn("heartbeat failed; trying again at the next beat", "err", err)
			}
		}
	}()
	result := r.Handler(work, c)
	handled()
	span.SetAttributes(attribute.String("opsgate.status", result.Status))
	if result.Status == "failed" {
		span.SetStatus(codes.Error, result.ReasonCode)
	}
	select {
	case <-lost:
		logger.Info("lease lost (cancelled or reaped); result dropped")
		return
	default:
	}
	backoff := r.Backoff
	for {
		_, err := r.Client.Complete(work, c.Run.ID, c.Lease.Epoch, result)
		switch {
		case err == nil:
			stop()
			<-beats
			return
		case errors.Is(err, ErrLeaseLost), !temporary(err):
			logger.Warn("completion refused", "err", err)
			stop()
			<-beats
			return
		}
		logger.Warn("completing failed; trying again while the lease holds", "err", err)
		select {
		case <-lost:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.MaxBackoff)
	}
}

// linkTo returns the link to the start's trace context tc, none if it
// has none or an unreadable one.
func linkTo(tc *TraceContext) []trace.Link {
	if tc == nil {
		return nil
	}
	carrier := propagation.MapCarrier{"traceparent": tc.Traceparent}
	if tc.Tracestate != nil {
		carrier["tracestate"] = *tc.Tracestate
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
	if !sc.IsValid() {
		return nil
	}
	return []trace.Link{{SpanContext: sc}}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
