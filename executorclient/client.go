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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client calls the executor endpoints with an executor token (oge_...).
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// New returns a client of the opsgate at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 45 * time.Second}}
}

// ConnectionRef is a run's pinned connection.
type ConnectionRef struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	Provider    string `json:"provider"`
}

// Run is a run as opsgate shows it.
type Run struct {
	ID                 string         `json:"id"`
	TenantID           string         `json:"tenant_id"`
	Type               string         `json:"type"`
	CanonicalType      string         `json:"canonical_type"`
	Label              string         `json:"label"`
	Status             string         `json:"status"`
	Target             *string        `json:"target"`
	ProviderConnection *ConnectionRef `json:"provider_connection"`
	InitiatorID        string         `json:"initiator_id"`
	CreatedAt          time.Time      `json:"created_at"`
	StartedAt          *time.Time     `json:"started_at"`
	FinishedAt         *time.Time     `json:"finished_at"`
}

// Connection is the pinned connection with its non-secret settings.
type Connection struct {
	ConnectionRef
	Settings map[string]any `json:"settings"`
}

// Lease is a claim's hold on its run.
type Lease struct {
	Epoch               int64     `json:"epoch"`
	ExpiresAt           time.Time `json:"expires_at"`
	HeartbeatIntervalMS int64     `json:"heartbeat_interval_ms"`
}

// Claim is a run handed to this executor.
type Claim struct {
	Run        Run        `json:"run"`
	Connection Connection `json:"connection"`
	Lease      Lease      `json:"lease"`
	// TraceContext is the W3C trace context the run's start came with
	// (nil: none): a handler that traces links its work to it.
	TraceContext *TraceContext `json:"trace_context"`
}

// TraceContext is a W3C trace context.
type TraceContext struct {
	Traceparent string `json:"traceparent"`
	Tracestate  string `json:"tracestate,omitempty"`
}

// Observations are what a run found out about its connection.
type Observations struct {
	Consent     string `json:"consent,omitempty"`     // granted or revoked
	Credentials string `json:"credentials,omitempty"` // valid or invalid
}

// Result is how a run ended.
type Result struct {
	Status string `json:"status"` // succeeded or failed
	// ReasonCode is required for failed: provider.credentials_rejected,
	// provider.consent_revoked, provider.throttled or provider.unavailable.
	ReasonCode   string        `json:"reason_code,omitempty"`
	Summary      any           `json:"summary,omitempty"` // a JSON object of at most 16 KiB
	Observations *Observations `json:"observations,omitempty"`
}

// Succeeded is a success with summary (nil for none).
func Succeeded(summary any) Result { return Result{Status: "succeeded", Summary: summary} }

// Failed is a failure with a reason found during execution.
func Failed(reason string, summary any) Result {
	return Result{Status: "failed", ReasonCode: reason, Summary: summary}
}

// ErrLeaseLost is returned when opsgate answers 409 lease_lost: the run
// was reaped, cancelled or completed; stop working on it.
var ErrLeaseLost = errors.New("lease lost")

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

// Claim claims up to max runs, waiting up to wait for one when none is
// queued (an empty list after the wait).
func (c *Client) Claim(ctx context.Context, max int, wait time.Duration) ([]Claim, error) {
	var out struct {
		Items []Claim `json:"items"`
	}
	err := c.post(ctx, "/api/v1/executor/claims", map[string]any{"max": max, "wait_ms": wait.Milliseconds()}, &out)
	return out.Items, err
}

// Heartbeat extends the lease of runID at epoch and returns its new expiry.
func (c *Client) Heartbeat(ctx context.Context, runID string, epoch int64) (time.Time, error) {
	var out struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	err := c.post(ctx, "/api/v1/executor/runs/"+runID+"/heartbeat", map[string]any{"epoch": epoch}, &out)
	return out.ExpiresAt, err
}

// Complete reports how runID ended. Repeating it is safe: the same
// completion is answered again and recorded once.
func (c *Client) Complete(ctx context.Context, runID string, epoch int64, r Result) (Run, error) {
	body := struct {
		Epoch int64 `json:"epoch"`
		Result
	}{epoch, r}
	var run Run
	err := c.post(ctx, "/api/v1/executor/runs/"+runID+"/complete", body, &run)
	return run, err
}

func (c *Client) post(ctx context.Context, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		p := &ProblemError{Status: resp.StatusCode}
		_ = json.Unmarshal(got, p)
		return p
	}
	return json.Unmarshal(got, out)
}

// temporary reports whether err is worth retrying later: a network error
// or a temporary problem (not a refusal such as 4xx).
func temporary(err error) bool {
	var p *ProblemError
	if errors.As(err, &p) {
		return p.Temporary()
	}
	return err != nil && !errors.Is(err, context.Canceled)
}
