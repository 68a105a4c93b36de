package projections

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/opsgate/opsgate/internal/pgtest"
)

// item is the row of the tables of these tests.
type item struct {
	ID   string `db:"id"`
	Name string `db:"name"`
	Hits int    `db:"hits"`
}

var (
	items     = newTable[item]("items")
	itemName  = columnOf[string](items, "name")
	itemHits  = columnOf[int](items, "hits")
	seenItems = newTable[seenItem]("items")
	seenHits  = columnOf[int](seenItems, "hits")
	seenSeen  = columnOf[*string](seenItems, "seen")
)

// seenItem is an item with a nullable column.
type seenItem struct {
	ID   string  `db:"id"`
	Name string  `db:"name"`
	Hits int     `db:"hits"`
	Seen *string `db:"seen"`
}

func ptr[T any](v T) *T { return &v }

// TestFoldActsLikeTheStatements checks the replay fold against the
// semantics of the statements the live writer sends: INSERT ... ON
// CONFLICT DO NOTHING, UPDATE and DELETE of the row with the key, if any.
func TestFoldActsLikeTheStatements(t *testing.T) {
	f := newFold(seenItems.table)
	seenItems.insert(f, &seenItem{ID: "a", Name: "first"})
	seenItems.insert(f, &seenItem{ID: "a", Name: "second", Hits: 5}) // conflict: nothing happens
	seenItems.insert(f, &seenItem{ID: "b", Name: "bee"})
	seenItems.update(f, "a", increment(seenHits), set(seenSeen, ptr("7")))
	seenItems.update(f, "a", increment(seenHits))
	seenItems.update(f, "missing", increment(seenHits)) // no row: nothing happens
	seenItems.delete(f, "b")
	seenItems.delete(f, "missing")
	seenItems.insert(f, &seenItem{ID: "c", Name: "sea"})
	seenItems.insert(f, &seenItem{ID: "b", Name: "bee again"}) // a deleted key may come back

	got := rowsOf(t, f.copySource(seenItems.table))
	want := [][]any{{"a", "first", 2, "7"}, {"c", "sea", 0, nil}, {"b", "bee again", 0, nil}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
}

func TestSQLWriterStatements(t *testing.T) {
	var b pgx.Batch
	w := sqlWriter{b: &b, schema: "next"}
	items.insert(w, &item{ID: "a", Name: "x"})
	items.update(w, "a", increment(itemHits), set(itemName, "y"))
	items.delete(w, "a")
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

// TestTablesRefuseWhatTheyDoNotHave: a column a table does not have, or
// holds as another type, and a row struct that is no table, are refused
// where they are defined, at start-up, never in the middle of a batch.
func TestTablesRefuseWhatTheyDoNotHave(t *testing.T) {
	type untagged struct {
		ID   string `db:"id"`
		Name string
	}
	type unsupported struct {
		ID   string  `db:"id"`
		Rate float64 `db:"rate"`
	}
	type numberKey struct {
		ID int `db:"id"`
	}
	type twice struct {
		ID    string `db:"id"`
		Name  string `db:"name"`
		Label string `db:"name"`
	}
	for name, define := range map[string]func(){
		"unknown column":  func() { columnOf[int](items, "nope") },
		"mistyped column": func() { columnOf[int](items, "name") },
		"untagged field":  func() { newTable[untagged]("untagged") },
		"unsupported":     func() { newTable[unsupported]("unsupported") },
		"number key":      func() { newTable[numberKey]("numbers") },
		"column twice":    func() { newTable[twice]("twice") },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "projections: ") {
					t.Errorf("%s: defined (%v), want refused", name, r)
				}
			}()
			define()
		}()
	}
}

// TestRowsAreTheTables: the row struct of every projector's table names
// the migrated table's columns, in its order, with types that hold them.
func TestRowsAreTheTables(t *testing.T) {
	pool := pgtest.NewPool(t)
	types := map[kind][]string{
		kindText: {"text"}, kindNullText: {"text"}, kindInt: {"integer", "bigint"},
		kindTime: {"timestamp with time zone"}, kindNullTime: {"timestamp with time zone"}, kindJSON: {"jsonb"},
	}
	for _, p := range All() {
		for _, tb := range p.Tables {
			rows, err := pool.Query(context.Background(), `SELECT column_name, data_type FROM information_schema.columns
				WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, LiveSchema, tb.name)
			if err != nil {
				t.Fatal(err)
			}
			var columns []string
			for rows.Next() {
				var name, typ string
				if err := rows.Scan(&name, &typ); err != nil {
					t.Fatal(err)
				}
				if i := tb.index(name); i >= 0 && !slices.Contains(types[tb.kinds[i]], typ) {
					t.Errorf("%s.%s is %s, its field holds %v", tb.name, name, typ, types[tb.kinds[i]])
				}
				columns = append(columns, name)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(columns, tb.columns) {
				t.Errorf("%s has columns %v, its rows %v", tb.name, columns, tb.columns)
			}
		}
	}
}

func rowsOf(t *testing.T, src pgx.CopyFromSource) [][]any {
	t.Helper()
	var rows [][]any
	for src.Next() {
		v, err := src.Values()
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, slices.Clone(v)) // valid until the next row
	}
	return rows
}

// TestBatchWriterSendsTheNetEffect: a batch's changes reach the database
// as one statement per table and kind, carrying each row's net change.
func TestBatchWriterSendsTheNetEffect(t *testing.T) {
	w := newBatchWriter("next")
	// a: inserted, changed, deleted: nothing to send.
	items.insert(w, &item{ID: "a", Name: "x"})
	items.update(w, "a", increment(itemHits))
	items.delete(w, "a")
	// b: inserted and changed: inserted as it ends up.
	items.insert(w, &item{ID: "b", Name: "x"})
	items.update(w, "b", increment(itemHits), set(itemName, "y"))
	items.update(w, "b", increment(itemHits))
	// c and d existed: their changes merge into one update each, of one shape.
	items.update(w, "c", increment(itemHits), set(itemName, "c1"))
	items.update(w, "c", increment(itemHits))
	items.update(w, "d", set(itemName, "d1"), increment(itemHits))
	// e existed: set, then added to, is one assignment.
	items.update(w, "e", set(itemHits, 5))
	items.update(w, "e", increment(itemHits))
	// f existed and is deleted: its earlier change is not sent.
	items.update(w, "f", set(itemName, "gone"))
	items.delete(w, "f")
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
