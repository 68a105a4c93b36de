package connections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/journal"
)

// TestFoldedHistoryEqualsRow records random sequences of operator
// patches, learned observations and default changes on a tenant's
// connections, and checks after every step that each connection folded
// from its history (Connection.Apply over its stream and the
// ProviderConnectionMadeDefault events naming it as the previous default,
// read as of now exactly as ?as_of= reads it) equals its row, on every
// field.
//
// Sequence i uses seed base+i on a tenant of its own, so a sequence does
// the same whatever ran before it: a failure names its sequence's seed,
// and OPSGATE_PROPERTY_SEED=<seed> replays the run from that sequence on.
func TestFoldedHistoryEqualsRow(t *testing.T) {
	const sequences, steps = 12, 30
	base := uint64(time.Now().UnixNano())
	if s := os.Getenv("OPSGATE_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("OPSGATE_PROPERTY_SEED=%q: %v", s, err)
		}
		base = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("base seed %d: OPSGATE_PROPERTY_SEED=%d replays the whole run", base, base)
		}
	})
	a := apptest.Start(t, apptest.Roles(app.Roles{}))
	w := world{a: a, history: audit.NewHistory(a.Store), workspace: a.Workspace(t, "MSP").ID, owner: a.User(t, "Owner").ID, seen: map[string]int{}}
	for i := range sequences {
		seed := base + uint64(i)
		w.run(t, seed, steps)
	}
	t.Logf("%d sequences of %d steps, base seed %d; %v", sequences, steps, base, w.seen)
	for _, k := range []string{"create", "create default", "patch", "learn", "make default", "event ProviderConnectionRenamed",
		"event ProviderConnectionConsentChanged", "event ProviderConnectionCredentialsChanged", "event ProviderConnectionEnabledChanged",
		"event ProviderConnectionSimulationChanged", "event ProviderConnectionVerified", "event ProviderConnectionMadeDefault",
		"default taken from another"} {
		if w.seen[k] == 0 {
			t.Errorf("the sequences never reached %q", k)
		}
	}
}

// world is what every sequence shares: the application, the as_of reader,
// a workspace and an owner of every sequence's tenant.
type world struct {
	a         *apptest.App
	history   *audit.History
	workspace string
	owner     string
	seen      map[string]int
}

// run records steps random changes on a new tenant's connections, drawn
// from seed, checking every connection after each.
func (w *world) run(t *testing.T, seed uint64, steps int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	ctx := w.a.Ctx
	tenant := w.a.Tenant(t, w.workspace, fmt.Sprintf("Tenant %d", seed)).ID
	w.a.Grant(t, w.owner, tenant, domain.RoleOwner)
	var ids []string
	create := func() {
		in := connections.NewConnection{
			Provider: connections.ProviderSimulated, DisplayName: fmt.Sprintf("Graph %d", len(ids)),
			Consent: pick(rng, consents), Credentials: pick(rng, credentials), Enabled: rng.IntN(2) == 0,
			Simulation: simulation(rng), IsDefault: rng.IntN(3) == 0,
		}
		w.seen["create"]++
		if in.IsDefault {
			w.seen["create default"]++
		}
		c, err := w.a.Connections.Create(ctx, apptest.As(w.owner), tenant, in)
		if err != nil {
			t.Fatalf("seed %d: create: %v", seed, err)
		}
		ids = append(ids, c.ID)
	}
	create()
	for step := range steps {
		id := ids[rng.IntN(len(ids))]
		var what string
		switch n := rng.IntN(10); {
		case n == 0 && len(ids) < 4:
			what = "create"
			create()
		case n < 5:
			what = "patch"
			p := patch(rng)
			if _, err := w.a.Connections.Update(ctx, apptest.As(w.owner), id, p); err != nil {
				t.Fatalf("seed %d step %d: update %s with %s: %v", seed, step, id, show(p), err)
			}
		case n < 8:
			what = "learn"
			learned, verified := observations(rng)
			err := w.a.Store.InTx(ctx, func(ctx context.Context, tx *eventstore.Tx) error {
				_, err := w.a.Connections.Learn(ctx, tx, domain.Actor{ID: "builtin"}, id, journal.NewID(), learned, verified)
				return err
			})
			if err != nil {
				t.Fatalf("seed %d step %d: learn on %s: %v", seed, step, id, err)
			}
		default:
			what = "make default"
			if _, err := w.a.Connections.MakeDefault(ctx, apptest.As(w.owner), id); err != nil {
				t.Fatalf("seed %d step %d: make %s the default: %v", seed, step, id, err)
			}
		}
		if what != "create" {
			w.seen[what]++ // create counts itself
		}
		for _, c := range ids {
			if !w.check(t, c) {
				t.Fatalf("seed %d step %d (%s on %s): connection %s folded from its history is not its row", seed, step, what, id, c)
			}
		}
	}
	for _, c := range ids {
		for _, e := range w.a.Stream(t, domain.ConnectionStream(c).String()) {
			w.seen["event "+e.Type]++
			if md, ok := w.a.Decode(t, e).(domain.ProviderConnectionMadeDefault); ok && md.PreviousID != "" {
				w.seen["default taken from another"]++
			}
		}
	}
}

// check reports whether connection id folded from its history as of now
// equals its row, logging both when not.
func (w *world) check(t *testing.T, id string) bool {
	t.Helper()
	row, err := w.a.Connections.Current(w.a.Ctx, id)
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	folded, err := w.history.ConnectionAt(w.a.Ctx, id, audit.AtTime(time.Now().Add(time.Hour)))
	if errors.Is(err, domain.ErrNotFound) {
		t.Errorf("connection %s has a row and no history", id)
		return false
	}
	if err != nil {
		t.Fatalf("fold %s: %v", id, err)
	}
	row, folded = microseconds(row), microseconds(folded)
	if !reflect.DeepEqual(folded, row) {
		t.Errorf("connection %s\n  folded %s\n  row    %s", id, show(folded), show(row))
		return false
	}
	return true
}

// microseconds returns c with its times in UTC at microsecond precision,
// what PostgreSQL keeps.
func microseconds(c connections.Connection) connections.Connection {
	at := func(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
	ptr := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		u := at(*t)
		return &u
	}
	c.CreatedAt, c.UpdatedAt = at(c.CreatedAt), at(c.UpdatedAt)
	c.ReadinessChangedAt, c.LastVerifiedAt = ptr(c.ReadinessChangedAt), ptr(c.LastVerifiedAt)
	return c
}

var (
	consents    = []domain.Consent{domain.ConsentGranted, domain.ConsentMissing, domain.ConsentRevoked}
	credentials = []domain.Credentials{domain.CredentialsValid, domain.CredentialsExpired, domain.CredentialsInvalid, domain.CredentialsMissing}
	failures    = []domain.ReasonCode{"provider.unavailable", "provider.throttled", "provider.credentials_rejected", "provider.consent_revoked"}
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// maybe returns a pointer to one of xs, or nil one time in two.
func maybe[T any](rng *rand.Rand, xs []T) *T {
	if rng.IntN(2) == 0 {
		return nil
	}
	x := pick(rng, xs)
	return &x
}

// simulation returns random simulation settings, or none.
func simulation(rng *rand.Rand) *domain.Simulation {
	if rng.IntN(3) == 0 {
		return nil
	}
	return &domain.Simulation{LatencyMS: rng.IntN(3) * 10, ThrottleTimes: rng.IntN(2), FailWith: maybe(rng, failures)}
}

// patch returns an operator's patch of a random subset of the fields,
// some of them set to what they already are.
func patch(rng *rand.Rand) connections.Patch {
	var p connections.Patch
	p.DisplayName = maybe(rng, []string{"Graph", "Graph 0", " Graph 1 ", "Contoso Graph"})
	p.Consent = maybe(rng, consents)
	p.Credentials = maybe(rng, credentials)
	p.Enabled = maybe(rng, []bool{true, false})
	if rng.IntN(3) == 0 {
		p.SetSimulation, p.Simulation = true, simulation(rng)
	}
	return p
}

// observations returns what a run might learn: random consent and
// credentials observations, and whether a connection check succeeded.
func observations(rng *rand.Rand) (domain.Observations, bool) {
	return domain.Observations{Consent: maybe(rng, consents), Credentials: maybe(rng, credentials)}, rng.IntN(3) == 0
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
