package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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

// batchWriter folds the row changes of one feed batch and sends their net
// effect, one statement per table and kind of change, however many rows:
// a row inserted and changed in the batch is inserted as it ends up (or
// not at all if it was deleted too); changes of a row that existed before
// the batch are merged into one update (or a delete). The rows travel as
// one JSON array per statement, read with jsonb_populate_recordset, so
// that each statement has one shape whatever the number of rows.
//
// It relies on what every projector does: a key is inserted once, before
// any change of it (run ids, event ids), as the replay fold does.
type batchWriter struct {
	schema string
	tables map[*table]*batchTable
	order  []*table
}

type batchTable struct {
	rows map[string]*batchRow
	keys []string // in the order first changed
}

// batchRow is what a batch did to one row.
type batchRow struct {
	deleted bool  // an existing row was deleted (before whatever follows)
	values  []any // inserted in this batch: the row as it ends up
	// sets and adds are the merged update of a row that existed before
	// the batch: columns assigned, and amounts added.
	sets map[string]any
	adds map[string]int
}

func newBatchWriter(schema string) *batchWriter {
	return &batchWriter{schema: schema, tables: map[*table]*batchTable{}}
}

func (w *batchWriter) row(t *table, key string) *batchRow {
	bt := w.tables[t]
	if bt == nil {
		bt = &batchTable{rows: map[string]*batchRow{}}
		w.tables[t] = bt
		w.order = append(w.order, t)
	}
	r := bt.rows[key]
	if r == nil {
		r = &batchRow{}
		bt.rows[key] = r
		bt.keys = append(bt.keys, key)
	}
	return r
}

func (w *batchWriter) Insert(t *table, values ...any) {
	r := w.row(t, values[0].(string))
	if r.values != nil {
		return // present: an insert does nothing
	}
	r.values = slices.Clone(values)
}

func (w *batchWriter) Update(t *table, key string, assignments ...assignment) {
	r := w.row(t, key)
	switch {
	case r.values != nil:
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
	case r.deleted:
		// deleted in this batch: no row to update
	default:
		for _, a := range assignments {
			switch {
			case !a.add:
				if r.sets == nil {
					r.sets = map[string]any{}
				}
				r.sets[a.column] = a.value
				delete(r.adds, a.column)
			case r.sets != nil && r.sets[a.column] != nil:
				r.sets[a.column] = r.sets[a.column].(int) + a.value.(int)
			default:
				if r.adds == nil {
					r.adds = map[string]int{}
				}
				r.adds[a.column] += a.value.(int)
			}
		}
	}
}

func (w *batchWriter) Delete(t *table, key string) {
	r := w.row(t, key)
	if r.values != nil {
		r.values = nil // inserted in this batch: never sent
		return
	}
	r.deleted, r.sets, r.adds = true, nil, nil
}

// queue queues the net effect of the batch into b: for each table, its
// deletes, then its inserts, then its updates (one statement per set of
// columns updated). Each row has one change, so their order within a
// kind does not matter.
func (w *batchWriter) queue(b *pgx.Batch) {
	for _, t := range w.order {
		bt := w.tables[t]
		name := t.in(w.schema)
		var deleted []string
		var inserted [][]any
		updates := map[string][]*batchRow{}
		var shapes []string
		updateKeys := map[*batchRow]string{}
		for _, key := range bt.keys {
			r := bt.rows[key]
			if r.deleted {
				deleted = append(deleted, key)
			}
			if r.values != nil {
				inserted = append(inserted, r.values)
			}
			if len(r.sets)+len(r.adds) > 0 {
				shape := updateShape(r)
				if _, ok := updates[shape]; !ok {
					shapes = append(shapes, shape)
				}
				updates[shape] = append(updates[shape], r)
				updateKeys[r] = key
			}
		}
		if len(deleted) > 0 {
			b.Queue(fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1::text[])`, name, t.key()), deleted)
		}
		if len(inserted) > 0 {
			var rows bytes.Buffer
			rows.WriteByte('[')
			for i, values := range inserted {
				if i > 0 {
					rows.WriteByte(',')
				}
				appendObject(&rows, t.columns, values)
			}
			rows.WriteByte(']')
			b.Queue(fmt.Sprintf(`INSERT INTO %[1]s SELECT * FROM jsonb_populate_recordset(NULL::%[1]s, $1) ON CONFLICT (%[2]s) DO NOTHING`,
				name, t.key()), rows.String())
		}
		for _, shape := range shapes {
			group := updates[shape]
			first := group[0]
			cols := []string{t.key()}
			var assign []string
			for _, c := range sortedKeys(first.sets) {
				cols = append(cols, c)
				assign = append(assign, fmt.Sprintf("%[1]s = x.%[1]s", c))
			}
			for _, c := range sortedKeys(first.adds) {
				cols = append(cols, c)
				assign = append(assign, fmt.Sprintf("%[1]s = t.%[1]s + x.%[1]s", c))
			}
			var rows bytes.Buffer
			keys := make([]string, len(group))
			rows.WriteByte('[')
			for i, r := range group {
				if i > 0 {
					rows.WriteByte(',')
				}
				keys[i] = updateKeys[r]
				values := []any{updateKeys[r]}
				for _, c := range cols[1:] {
					if v, ok := r.sets[c]; ok {
						values = append(values, v)
					} else {
						values = append(values, r.adds[c])
					}
				}
				appendObject(&rows, cols, values)
			}
			rows.WriteByte(']')
			// The keys again, as an array: the planner cannot tell how many
			// rows the JSON holds, and with them it looks the rows up by key
			// rather than reading the whole table.
			b.Queue(fmt.Sprintf(`UPDATE %[1]s AS t SET %[2]s FROM jsonb_populate_recordset(NULL::%[1]s, $1) AS x
				WHERE t.%[3]s = x.%[3]s AND t.%[3]s = ANY($2::text[])`,
				name, strings.Join(assign, ", "), t.key()), rows.String(), keys)
		}
	}
}

// updateShape names the columns an update sets and adds to.
func updateShape(r *batchRow) string {
	return strings.Join(sortedKeys(r.sets), ",") + "+" + strings.Join(sortedKeys(r.adds), ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendObject appends the JSON object of values by column to buf.
// Byte slices are JSON already (jsonb columns); an empty one is null.
func appendObject(buf *bytes.Buffer, columns []string, values []any) {
	buf.WriteByte('{')
	for i, c := range columns {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('"')
		buf.WriteString(c)
		buf.WriteString(`":`)
		switch v := values[i].(type) {
		case nil:
			buf.WriteString("null")
		case []byte:
			if len(v) == 0 {
				buf.WriteString("null")
			} else {
				buf.Write(v)
			}
		case json.RawMessage:
			if len(v) == 0 {
				buf.WriteString("null")
			} else {
				buf.Write(v)
			}
		case int:
			buf.WriteString(strconv.Itoa(v))
		case int64:
			buf.WriteString(strconv.FormatInt(v, 10))
		case string:
			writeJSONString(buf, v)
		case *string:
			if v == nil {
				buf.WriteString("null")
			} else {
				writeJSONString(buf, *v)
			}
		case time.Time:
			buf.WriteByte('"')
			buf.WriteString(v.Format(time.RFC3339Nano))
			buf.WriteByte('"')
		case *time.Time:
			if v == nil {
				buf.WriteString("null")
			} else {
				buf.WriteByte('"')
				buf.WriteString(v.Format(time.RFC3339Nano))
				buf.WriteByte('"')
			}
		default:
			b, err := json.Marshal(v)
			if err != nil {
				panic(fmt.Sprintf("projections: column %s: %v", c, err))
			}
			buf.Write(b)
		}
	}
	buf.WriteByte('}')
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s)
	buf.Write(b)
}
