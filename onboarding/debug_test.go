package onboarding_test

import (
	"context"
	"testing"
	"time"
)

func dumpEvents(t *testing.T, f *fixture) {
	rows, err := f.db.Query(context.Background(), `SELECT position, tx_id::text, event_type, stream_id, recorded_at FROM events ORDER BY position`)
	if err != nil {
		t.Logf("dump: %v", err)
		return
	}
	defer rows.Close()
	var first time.Time
	for rows.Next() {
		var pos int64
		var tx, typ, stream string
		var at time.Time
		_ = rows.Scan(&pos, &tx, &typ, &stream, &at)
		if first.IsZero() {
			first = at
		}
		t.Logf("%4d tx=%s +%8s %-32s %s", pos, tx, at.Sub(first).Round(time.Millisecond), typ, stream)
	}
}
