package main

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/executors"
)

// keepLive keeps executors live for the preflight (contract section 12)
// until the returned stop is called: the built-in worker of provider
// simulated (announced as a worker process announces itself) and the HTTP
// executors of tokens (each calls an executor endpoint). The backlog and
// decision-alone scenarios queue runs while nothing claims them, as when
// the executors are deployed but momentarily busy.
func keepLive(ctx context.Context, pool *pgxpool.Pool, baseURL string, tokens ...string) (stop func(), err error) {
	presence := executors.New(pool, nil, nil, nil, 0)
	id := "bench-" + ulid.Make().String()
	callIn := func(ctx context.Context) error {
		if err := presence.Announce(ctx, id, []string{"simulated"}); err != nil {
			return err
		}
		for _, token := range tokens {
			// A heartbeat of no run (404): a call without taking work.
			req, _ := http.NewRequestWithContext(ctx, "POST", baseURL+"/api/v1/executor/runs/"+ulid.Make().String()+"/heartbeat", strings.NewReader(`{"epoch":1}`))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		return nil
	}
	if err := callIn(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = presence.Withdraw(context.WithoutCancel(ctx), id)
				return
			case <-t.C:
				_ = callIn(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}
