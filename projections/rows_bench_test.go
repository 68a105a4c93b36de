package projections

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// benchHistory is a synthetic history of runs decided, deduped, started
// and ended every way, as the projectors see it: events and their payloads.
func benchHistory(runs int) ([]eventstore.Event, []eventstore.Payload) {
	var events []eventstore.Event
	var payloads []eventstore.Payload
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pos := int64(0)
	add := func(p eventstore.Payload) {
		pos++
		at = at.Add(time.Millisecond)
		events = append(events, eventstore.Event{Position: pos, TxID: uint64(pos), ID: fmt.Sprintf("ev-%d", pos), RecordedAt: at})
		payloads = append(payloads, p)
	}
	conn := &domain.ConnectionRef{ID: "conn-1", DisplayName: "Graph", Provider: "m365"}
	summary := json.RawMessage(`{"groups":3,"users":12}`)
	for i := range runs {
		id := fmt.Sprintf("01JRUN%020d", i)
		info := domain.StartInfo{TenantID: "tenant-1", ScopeID: domain.ConnectionScope("conn-1"), Type: "inventory.sync",
			CanonicalType: "inventory.sync", Label: "Inventory sync", Surface: "inventory_sync", InitiatorID: "user-1", Connection: conn}
		if i%10 == 9 {
			add(domain.StartBlocked{RunID: id, StartInfo: info, At: at,
				Reason: domain.Reason{Code: "provider_connection.consent_missing", Class: "consent", Message: "Consent is missing"}})
			continue
		}
		add(domain.StartAccepted{RunID: id, StartInfo: info, At: at})
		add(domain.StartDeduped{RunID: id, StartInfo: info, At: at})
		ref := domain.RunRef{RunID: id, ScopeID: info.ScopeID, TenantID: info.TenantID, Start: info, CreatedAt: at}
		add(domain.RunStarted{RunRef: ref, Epoch: 1, WorkerID: "w", At: at})
		started := at
		switch i % 3 {
		case 0:
			add(domain.RunSucceeded{RunRef: ref, StartedAt: &started, Epoch: 1, Summary: summary, At: at})
		case 1:
			add(domain.RunFailed{RunRef: ref, StartedAt: &started, Epoch: 1, Summary: summary, At: at,
				Reason: domain.Reason{Code: "provider.unavailable", Class: "provider", Message: "The provider is unavailable"}})
		default:
			add(domain.RunCancelled{RunRef: ref, StartedAt: &started, ActorID: "user-1", WasRunning: true, At: at,
				Reason: domain.Reason{Code: "run.cancelled", Class: "operator", Message: "Cancelled"}})
		}
	}
	return events, payloads
}

// BenchmarkReplayFold measures the replay's work in memory: every
// projector folds the history, then its rows are read as COPY reads them.
func BenchmarkReplayFold(b *testing.B) {
	events, payloads := benchHistory(20_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, p := range All() {
			f := newFold(p.Tables...)
			for i, e := range events {
				p.Apply(f, e, payloads[i])
			}
			for _, t := range p.Tables {
				src := f.copySource(t)
				for src.Next() {
					if _, err := src.Values(); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
	b.ReportMetric(float64(len(events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBatchWriter measures the live writer's work in memory: the
// history in feed batches of 500, each folded to its net changes and
// queued as statements.
func BenchmarkBatchWriter(b *testing.B) {
	events, payloads := benchHistory(20_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, p := range All() {
			for start := 0; start < len(events); start += 500 {
				end := min(start+500, len(events))
				w := newBatchWriter(LiveSchema)
				for i := start; i < end; i++ {
					p.Apply(w, events[i], payloads[i])
				}
				var batch pgx.Batch
				w.queue(&batch)
			}
		}
	}
	b.ReportMetric(float64(len(events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
