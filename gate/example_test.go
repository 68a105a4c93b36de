package gate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/pgtest"
)

// ExampleService_Start decides two clicks of "Inventory sync" on one
// connection: the first is accepted, the second deduped onto the run the
// first queued.
func ExampleService_Start() {
	ctx := context.Background()
	a, ana, conn, done := exampleGate(ctx)
	defer done()

	click := gate.StartRequest{Actor: ana, Surface: domain.SurfaceInventorySync, ConnectionID: conn.ID}
	first, err := a.Gate.Start(ctx, click)
	if err != nil {
		fmt.Println(err)
		return
	}
	second, err := a.Gate.Start(ctx, click)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(first.Result.Outcome, "-", first.Result.Message.Title)
	fmt.Println(second.Result.Outcome, "-", second.Result.Message.Title)
	fmt.Println("same run:", second.Result.Run.ID == first.Result.Run.ID)
	// Output:
	// accepted - Inventory sync accepted
	// deduped - Inventory sync deduped: already queued
	// same run: true
}

// ExampleService_StartTx decides a start in the caller's transaction, with
// a write of the caller's own: both commit, or neither.
func ExampleService_StartTx() {
	ctx := context.Background()
	a, ana, conn, done := exampleGate(ctx)
	defer done()

	var resp gate.StartResponse
	err := a.Store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
		var err error
		resp, err = a.Gate.StartTx(ctx, tx, gate.StartRequest{Actor: ana, Surface: domain.SurfaceComplianceSnapshot, ConnectionID: conn.ID})
		if err != nil {
			return err
		}
		// The caller's own state, recorded with the decision.
		_, err = tx.Exec(ctx, `CREATE TEMP TABLE admitted AS SELECT $1::text AS run_id`, resp.Result.Run.ID)
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Result.Outcome, "-", resp.Result.Message.Title)
	// Output:
	// accepted - Compliance snapshot accepted
}

// exampleGate builds the application on a fresh database, with an owner
// (Ana) of a tenant and a ready connection of the built-in worker's
// provider. With the worker role the application announces its built-in
// worker, so that the connection's starts are executable; it is not run,
// so accepted runs stay queued.
func exampleGate(ctx context.Context) (a *app.App, ana domain.Actor, conn connections.Connection, done func()) {
	url, drop, err := pgtest.Create(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	a, err = app.New(ctx, apptest.Config(url), app.Roles{Worker: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		panic(err)
	}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	w, err := a.Tenancy.CreateWorkspace(ctx, domain.ActorAdmin, "Northwind MSP")
	must(err)
	tenant, err := a.Tenancy.CreateTenant(ctx, domain.ActorAdmin, w.ID, "Contoso")
	must(err)
	user, err := a.Tenancy.CreateUser(ctx, domain.ActorAdmin, "ana@northwind.example", "Ana")
	must(err)
	_, err = a.Tenancy.GrantMembership(ctx, domain.ActorAdmin, user.ID, tenant.ID, string(domain.RoleOwner))
	must(err)
	ana = domain.Actor{ID: user.ID}
	conn, err = a.Connections.Create(ctx, ana, tenant.ID, connections.NewConnection{
		Provider: connections.ProviderSimulated, DisplayName: "Graph (prod)",
		Consent: domain.ConsentGranted, Credentials: domain.CredentialsValid, Enabled: true,
	})
	must(err)
	return a, ana, conn, func() {
		a.Close()
		_ = drop()
	}
}
