package projections

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Projectors describe what an event does to their tables as row changes
// (insert unless present, update if present, delete) through a rowWriter.
// The same projector code thus drives two writers: the live one, which
// turns each change into a SQL statement of the subscriber's transaction,
// and the replay fold, which applies the changes to rows in memory and
// writes the final rows with COPY. Both give a table the same content for
// the same events; Verify compares the two.

// table is a read-model table as projectors write it: every column, the
// key first. Inserts give every column, so that a row folded in memory is
// complete without the table's defaults. Statements name the table with
// its schema: the live one, or the one a rebuild is building.
type table struct {
	name    string
	columns []string
	index   map[string]int
	insert  string // INSERT INTO %s ... ON CONFLICT (key) DO NOTHING
	delete  string // DELETE FROM %s WHERE key = $1
	live    [2]string
}

func newTable(name string, columns ...string) *table {
	t := &table{name: name, columns: columns, index: make(map[string]int, len(columns))}
	params := make([]string, len(columns))
	for i, c := range columns {
		t.index[c] = i
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	t.insert = fmt.Sprintf("INSERT INTO %%s (%s) VALUES (%s) ON CONFLICT (%s) DO NOTHING",
		strings.Join(columns, ", "), strings.Join(params, ", "), t.key())
	t.delete = fmt.Sprintf("DELETE FROM %%s WHERE %s = $1", t.key())
	t.live = [2]string{t.insertIn(LiveSchema), t.deleteIn(LiveSchema)}
	return t
}

// in returns t's name qualified with schema.
func (t *table) in(schema string) string { return pgx.Identifier{schema, t.name}.Sanitize() }

func (t *table) insertIn(schema string) string {
	if schema == LiveSchema && t.live[0] != "" {
		return t.live[0]
	}
	return fmt.Sprintf(t.insert, t.in(schema))
}

func (t *table) deleteIn(schema string) string {
	if schema == LiveSchema && t.live[1] != "" {
		return t.live[1]
	}
	return fmt.Sprintf(t.delete, t.in(schema))
}

func (t *table) key() string { return t.columns[0] }

// assignment is one column of an update: a new value, or an amount added.
type assignment struct {
	column string
	value  any
	add    bool
}

func set(column string, value any) assignment { return assignment{column: column, value: value} }

func increment(column string) assignment { return assignment{column: column, value: 1, add: true} }

// rowWriter receives a projector's row changes.
type rowWriter interface {
	// Insert adds a row (values in t.columns order) unless its key exists.
	Insert(t *table, values ...any)
	// Update assigns columns of the row with key, if there is one.
	Update(t *table, key string, assignments ...assignment)
	// Delete removes the row with key, if there is one.
	Delete(t *table, key string)
}

// sqlWriter queues each change as a statement of a batch, on the tables
// of schema.
type sqlWriter struct {
	b      *pgx.Batch
	schema string
}

func (w sqlWriter) Insert(t *table, values ...any) { w.b.Queue(t.insertIn(w.schema), values...) }

func (w sqlWriter) Delete(t *table, key string) { w.b.Queue(t.deleteIn(w.schema), key) }

func (w sqlWriter) Update(t *table, key string, assignments ...assignment) {
	var q strings.Builder
	args := make([]any, 0, len(assignments)+1)
	args = append(args, key)
	fmt.Fprintf(&q, "UPDATE %s SET ", t.in(w.schema))
	for i, a := range assignments {
		if i > 0 {
			q.WriteString(", ")
		}
		args = append(args, a.value)
		if a.add {
			fmt.Fprintf(&q, "%[1]s = %[1]s + $%[2]d", a.column, len(args))
		} else {
			fmt.Fprintf(&q, "%s = $%d", a.column, len(args))
		}
	}
	fmt.Fprintf(&q, " WHERE %s = $1", t.key())
	w.b.Queue(q.String(), args...)
}

// fold holds the rows of the tables it was given in memory and applies
// changes to them as the SQL statements would.
type fold struct {
	tables map[*table]*foldTable
}

type foldTable struct {
	byKey map[string]*foldRow
	rows  []*foldRow // in insertion order, deleted ones included
}

type foldRow struct {
	values  []any
	deleted bool
}

func newFold(tables ...*table) *fold {
	f := &fold{tables: make(map[*table]*foldTable, len(tables))}
	for _, t := range tables {
		f.tables[t] = &foldTable{byKey: map[string]*foldRow{}}
	}
	return f
}

func (f *fold) Insert(t *table, values ...any) {
	ft := f.tables[t]
	key := values[0].(string)
	if _, ok := ft.byKey[key]; ok {
		return
	}
	r := &foldRow{values: values}
	ft.byKey[key] = r
	ft.rows = append(ft.rows, r)
}

func (f *fold) Update(t *table, key string, assignments ...assignment) {
	r, ok := f.tables[t].byKey[key]
	if !ok {
		return
	}
	for _, a := range assignments {
		i, ok := t.index[a.column]
		if !ok {
			panic(fmt.Sprintf("projections: %s has no column %s", t.name, a.column))
		}
		if a.add {
			r.values[i] = r.values[i].(int) + a.value.(int)
		} else {
			r.values[i] = a.value
		}
	}
}

func (f *fold) Delete(t *table, key string) {
	ft := f.tables[t]
	if r, ok := ft.byKey[key]; ok {
		r.deleted = true
		delete(ft.byKey, key)
	}
}

// copySource returns t's rows for pgx.CopyFrom.
func (f *fold) copySource(t *table) pgx.CopyFromSource {
	ft := f.tables[t]
	rows := make([][]any, 0, len(ft.byKey))
	for _, r := range ft.rows {
		if !r.deleted {
			rows = append(rows, r.values)
		}
	}
	return pgx.CopyFromRows(rows)
}
