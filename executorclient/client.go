// Package executorclient is a small Go client for opsgate executors: the
// platform's own job code that runs the runs opsgate accepted (contract
// section 9). Client speaks the three executor endpoints; Runner is the
// whole loop: it claims runs with a long poll, runs each with a handler
// while it heartbeats the lease, completes it, backs off on 5xx answers
// and network errors, and stops gracefully.
//
//	r := &executorclient.Runner{
//		Client:      executorclient.New("https://opsgate.example", os.Getenv("OPSGATE_EXECUTOR_TOKEN")),
//		Concurrency: 4,
//		Handler: func(ctx context.Context, c executorclient.Claim) executorclient.Result {
//			// sync the tenant's directory through c.Connection ...
//			return executorclient.Succeeded(map[string]any{"groups": 42})
//		},
//	}
//	err := r.Run(ctx) // until ctx ends; running work is finished first
package executorclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/opsgate/opsgate/clients/go/opsgate"
)

// Client calls the executor endpoints with an executor token (oge_...),
// through the generated client of the API (clients/go/opsgate).
type Client struct {
	api *opsgate.ClientWithResponses
}

// New returns a client of the opsgate at baseURL.
func New(baseURL, token string) *Client {
	api, err := opsgate.NewClientWithResponses(strings.TrimRight(baseURL, "/"),
		opsgate.WithHTTPClient(&http.Client{Timeout: 45 * time.Second}),
		opsgate.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		// Only a base URL that does not parse fails here; every call
		// reports it.
		return &Client{}
	}
	return &Client{api: api}
}

// The shapes of the executor endpoints, as the API document gives them.
type (
	// Claim is a run handed to this executor: the run, its pinned
	// connection with its non-secret settings, the lease, and the W3C
	// trace context the run's start came with (nil: none), which a
	// handler that traces links its work to.
	Claim = opsgate.Claim
	// Run is a run as opsgate shows it.
	Run = opsgate.Run
	// Lease is a claim's hold on its run.
	Lease = opsgate.Lease
	// TraceContext is a W3C trace context.
	TraceContext = opsgate.TraceContext
	// Observations are what a run found out about its connection.
	Observations = opsgate.Observations
)

// Result is how a run ended.
type Result struct {
	Status string // succeeded or failed
	// ReasonCode is required for failed: provider.credentials_rejected,
	// provider.consent_revoked, provider.throttled or provider.unavailable.
	ReasonCode   string
	Summary      map[string]any // at most 16 KiB as JSON
	Observations *Observations
}

// Succeeded is a success with summary (nil for none).
func Succeeded(summary map[string]any) Result { return Result{Status: "succeeded", Summary: summary} }

// Failed is a failure with a reason found during execution.
func Failed(reason string, summary map[string]any) Result {
	return Result{Status: "failed", ReasonCode: reason, Summary: summary}
}

// ErrLeaseLost is returned when opsgate answers 409 lease_lost: the run
// was reaped, cancelled or completed; stop working on it.
var ErrLeaseLost = errors.New("lease lost")

var errNoClient = errors.New("opsgate: the base URL does not parse")

// ProblemError is an answer opsgate gave as a problem.
type ProblemError struct {
	Status int
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

func (e *ProblemError) Error() string {
	return fmt.Sprintf("opsgate: %d %s: %s", e.Status, e.Code, e.Detail)
}

// Is makes errors.Is(err, ErrLeaseLost) true for a lease_lost problem.
func (e *ProblemError) Is(target error) bool { return target == ErrLeaseLost && e.Code == "lease_lost" }

// Temporary reports whether the same request may succeed later: 5xx
// (the database away, a timeout) and 429.
func (e *ProblemError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// problem returns the problem of a non-2xx answer, nil for a 2xx one.
func problem(status int, body []byte) error {
	if status/100 == 2 {
		return nil
	}
	p := &ProblemError{Status: status}
	_ = json.Unmarshal(body, p)
	return p
}

// Claim claims up to max runs, waiting up to wait for one when none is
// queued (an empty list after the wait).
func (c *Client) Claim(ctx context.Context, max int, wait time.Duration) ([]Claim, error) {
	if c.api == nil {
		return nil, errNoClient
	}
	waitMS := int(wait.Milliseconds())
	res, err := c.api.ClaimRunsWithResponse(ctx, opsgate.ClaimRunsJSONRequestBody{Max: &max, WaitMs: &waitMS})
	if err != nil {
		return nil, err
	}
	if err := problem(res.StatusCode(), res.Body); err != nil {
		return nil, err
	}
	return res.JSON200.Items, nil
}

// Heartbeat extends the lease of runID at epoch and returns its new expiry.
func (c *Client) Heartbeat(ctx context.Context, runID string, epoch int) (time.Time, error) {
	if c.api == nil {
		return time.Time{}, errNoClient
	}
	res, err := c.api.HeartbeatRunWithResponse(ctx, runID, opsgate.HeartbeatRunJSONRequestBody{Epoch: epoch})
	if err != nil {
		return time.Time{}, err
	}
	if err := problem(res.StatusCode(), res.Body); err != nil {
		return time.Time{}, err
	}
	return res.JSON200.ExpiresAt, nil
}

// Complete reports how runID ended. Repeating it is safe: the same
// completion is answered again and recorded once.
func (c *Client) Complete(ctx context.Context, runID string, epoch int, r Result) (Run, error) {
	if c.api == nil {
		return Run{}, errNoClient
	}
	body := opsgate.CompleteRunJSONRequestBody{Epoch: epoch, Status: opsgate.CompletionStatus(r.Status), Observations: r.Observations}
	if r.ReasonCode != "" {
		body.ReasonCode = &r.ReasonCode
	}
	if r.Summary != nil {
		body.Summary = &r.Summary
	}
	res, err := c.api.CompleteRunWithResponse(ctx, runID, body)
	if err != nil {
		return Run{}, err
	}
	if err := problem(res.StatusCode(), res.Body); err != nil {
		return Run{}, err
	}
	return *res.JSON200, nil
}

// temporary reports whether err is worth retrying later: a network error
// or a temporary problem (not a refusal such as 4xx).
func temporary(err error) bool {
	var p *ProblemError
	if errors.As(err, &p) {
		return p.Temporary()
	}
	return err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errNoClient)
}
