package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// askPhases measures asking before pressing and acting on many (issue
// 26): a tenant's availability with 50 connections, a dry run against
// the real start that follows it, and a 500-item batch start against
// the spread at 32 clients.
func askPhases(ctx context.Context, c *client, pool *pgxpool.Pool, fx *fixture, rep *report) error {
	progress("ask: availability of a tenant with 50 connections")
	tenant := *fx
	var tn struct{ ID string }
	if _, err := c.do(ctx, "POST", "/api/v1/admin/tenants", adminToken, map[string]string{"workspace_id": fx.workspace, "name": "bench availability"}, &tn); err != nil {
		return err
	}
	if _, err := c.do(ctx, "POST", "/api/v1/admin/memberships", adminToken, map[string]string{"user_id": fx.user, "tenant_id": tn.ID, "role": "owner"}, nil); err != nil {
		return err
	}
	tenant.tenant = tn.ID
	if _, err := createConnections(ctx, c, &tenant, "simulated", 50); err != nil {
		return err
	}
	var items int
	rep.Results["availability_50_connections"] = load(ctx, 1, 0, 300, func(ctx context.Context, _, _ int) error {
		var page struct{ Items []struct{ Surface string } }
		status, err := c.do(ctx, "GET", "/api/v1/tenants/"+tn.ID+"/availability", fx.token, nil, &page)
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("availability answered %d", status)
		}
		items = len(page.Items)
		return err
	})
	if items != 3+3*50 {
		return fmt.Errorf("availability answered %d items for 50 connections", items)
	}

	progress("ask: a dry run and the real start after it, alternating")
	conns, err := createConnections(ctx, c, fx, "simulated", 300)
	if err != nil {
		return err
	}
	dry := func(ctx context.Context, i int) error {
		_, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conns[i%len(conns)]+"/inventory-sync?dry_run=true", fx.token, nil, nil)
		return err
	}
	real := func(ctx context.Context, i int) error {
		_, err := c.do(ctx, "POST", "/api/v1/provider-connections/"+conns[i%len(conns)]+"/inventory-sync", fx.token, nil, nil)
		return err
	}
	rep.Results["dry_run_c1"], rep.Results["start_after_dry_run_c1"] = interleave(ctx, 10, 30, dry, real)
	rep.Ratios["dry_run_p50_vs_start"] = ratio(rep.Results["dry_run_c1"].P50ms, rep.Results["start_after_dry_run_c1"].P50ms)

	progress("ask: 500-item batch starts over 100 scopes, against the spread at 32 clients")
	drain(ctx, pool, time.Minute)
	spread := startLoad(ctx, c, fx, fx.conns, 32, 3*time.Second, 0)
	rep.Results["spread_c32_beside_batch"] = spread
	var lat []time.Duration
	began := time.Now()
	for round := range 3 {
		scopes, err := createConnections(ctx, c, fx, "simulated", 100)
		if err != nil {
			return err
		}
		surfaces := []string{"inventory_sync", "compliance_snapshot", "connection_check", "inventory_sync", "compliance_snapshot"}
		items := make([]map[string]any, 500)
		for i := range items {
			items[i] = map[string]any{"surface": surfaces[i/100], "provider_connection_id": scopes[i%100]}
		}
		t0 := time.Now()
		var out struct{ Items []struct{ Status int } }
		status, err := c.do(ctx, "POST", "/api/v1/starts/batch", fx.token, map[string]any{"items": items}, &out)
		if err != nil || status != http.StatusOK || len(out.Items) != 500 {
			return fmt.Errorf("batch %d answered %d with %d items: %v", round, status, len(out.Items), err)
		}
		lat = append(lat, time.Since(t0))
	}
	batch := summarise(lat, 0, time.Since(began))
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	batch.Throughput = float64(500*len(lat)) / total.Seconds()
	rep.Results["batch_500_starts"] = batch
	rep.Ratios["batch_starts_per_s_vs_spread_c32"] = ratio(batch.Throughput, spread.Throughput)
	return nil
}
