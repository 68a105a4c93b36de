package projections

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestFoldActsLikeTheStatements checks the replay fold against the
// semantics of the statements the live writer sends: INSERT ... ON
// CONFLICT DO NOTHING, UPDATE and DELETE of the row with the key, if any.
func TestFoldActsLikeTheStatements(t *testing.T) {
	items := newTable("items", "id", "name", "hits", "seen")
	f := newFold(items)
	f.Insert(items, "a", "first", 0, nil)
	f.Insert(items, "a", "second", 5, nil) // conflict: nothing happens
	f.Insert(items, "b", "bee", 0, nil)
	f.Update(items, "a", increment("hits"), set("seen", 7))
	f.Update(items, "a", increment("hits"))
	f.Update(items, "missing", increment("hits")) // no row: nothing happens
	f.Delete(items, "b")
	f.Delete(items, "missing")
	f.Insert(items, "c", "sea", 0, nil)
	f.Insert(items, "b", "bee again", 0, nil) // a deleted key may come back

	got := rowsOf(t, f.copySource(items))
	want := [][]any{{"a", "first", 2, 7}, {"c", "sea", 0, nil}, {"b", "bee again", 0, nil}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
}

func TestSQLWriterStatements(t *testing.T) {
	items := newTable("items", "id", "name", "hits")
	var b pgx.Batch
	w := sqlWriter{b: &b, schema: "next"}
	w.Insert(items, "a", "x", 0)
	w.Update(items, "a", increment("hits"), set("name", "y"))
	w.Delete(items, "a")
	want := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO "next"."items" (id, name, hits) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, []any{"a", "x", 0}},
		{`UPDATE "next"."items" SET hits = hits + $2, name = $3 WHERE id = $1`, []any{"a", 1, "y"}},
		{`DELETE FROM "next"."items" WHERE id = $1`, []any{"a"}},
	}
	if len(b.QueuedQueries) != len(want) {
		t.Fatalf("%d statements queued, want %d", len(b.QueuedQueries), len(want))
	}
	for i, q := range b.QueuedQueries {
		if q.SQL != want[i].sql || !reflect.DeepEqual(q.Arguments, want[i].args) {
			t.Errorf("statement %d: %q %v, want %q %v", i, q.SQL, q.Arguments, want[i].sql, want[i].args)
		}
	}
}

func TestFoldRejectsUnknownColumn(t *testing.T) {
	items := newTable("items", "id", "name")
	f := newFold(items)
	f.Insert(items, "a", "x")
	defer func() {
		if recover() == nil {
			t.Error("an update of a column the table does not have did not panic")
		}
	}()
	f.Update(items, "a", set("nope", 1))
}

func rowsOf(t *testing.T, src pgx.CopyFromSource) [][]any {
	t.Helper()
	var rows [][]any
	for src.Next() {
		v, err := src.Values()
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, v)
	}
	return rows
}

// TestBatchWriterSendsTheNetEffect: a batch's changes reach the database
// as one statement per table and kind, carrying each row's net change.
func TestBatchWriterSendsTheNetEffect(t *testing.T) {
	items := newTable("items", "id", "name", "hits")
	w := newBatchWriter("next")
	// a: inserted, changed, deleted: nothing to send.
	w.Insert(items, "a", "x", 0)
	w.Update(items, "a", increment("hits"))
	w.Delete(items, "a")
	// b: inserted and changed: inserted as it ends up.
	w.Insert(items, "b", "x", 0)
	w.Update(items, "b", increment("hits"), set("name", "y"))
	w.Update(items, "b", increment("hits"))
	// c and d existed: their changes merge into one update each, of one shape.
	w.Update(items, "c", increment("hits"), set("name", "c1"))
	w.Update(items, "c", increment("hits"))
	w.Update(items, "d", set("name", "d1"), increment("hits"))
	// e existed: set, then added to, is one assignment.
	w.Update(items, "e", set("hits", 5))
	w.Update(items, "e", increment("hits"))
	// f existed and is deleted: its earlier change is not sent.
	w.Update(items, "f", set("name", "gone"))
	w.Delete(items, "f")
	var b pgx.Batch
	w.queue(&b)
	want := []struct {
		sql string
		arg string
	}{
		{`DELETE FROM "next"."items" WHERE id = ANY($1::text[])`, "[f]"},
		{`INSERT INTO "next"."items" SELECT * FROM jsonb_populate_recordset(NULL::"next"."items", $1) ON CONFLICT (id) DO NOTHING`,
			`[{"id":"b","name":"y","hits":2}]`},
		{`UPDATE "next"."items" AS t SET name = x.name, hits = t.hits + x.hits FROM jsonb_populate_recordset(NULL::"next"."items", $1) AS x
				WHERE t.id = x.id AND t.id = ANY($2::text[])`,
			`[{"id":"c","name":"c1","hits":2},{"id":"d","name":"d1","hits":1}]`},
		{`UPDATE "next"."items" AS t SET hits = x.hits FROM jsonb_populate_recordset(NULL::"next"."items", $1) AS x
				WHERE t.id = x.id AND t.id = ANY($2::text[])`,
			`[{"id":"e","hits":6}]`},
	}
	if len(b.QueuedQueries) != len(want) {
		for _, q := range b.QueuedQueries {
			t.Logf("%s %v", q.SQL, q.Arguments)
		}
		t.Fatalf("%d statements, want %d", len(b.QueuedQueries), len(want))
	}
	for i, q := range b.QueuedQueries {
		if q.SQL != want[i].sql || fmt.Sprint(q.Arguments[0]) != want[i].arg {
			t.Errorf("statement %d:\n %s %v\nwant\n %s %s", i, q.SQL, q.Arguments[0], want[i].sql, want[i].arg)
		}
	}
}
