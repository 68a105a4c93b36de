package projections

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
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
//
// A table is defined once, by the struct of its rows: every field is a
// column, tagged db with the column's name, in the table's order, the
// key (a string) first. newTable walks the tags once, when the program
// starts, and derives from them the column list, the order of the values
// of INSERT and COPY and the key; updates name their columns through
// columnOf, checked against the same tags (name and Go type) at start-up,
// so that a column the table does not have stops the program before it
// projects anything rather than in the middle of a batch.

// table is a read-model table as projectors write it: every column, the
// key first. Inserts give every column, so that a row folded in memory is
// complete without the table's defaults. Statements name the table with
// its schema: the live one, or the one a rebuild is building.
type table struct {
	name    string
	columns []string
	kinds   []kind   // of each column's field
	names   []string // `"column":`, each column as the live writer's JSON names it
	row     reflect.Type
	insert  string // INSERT INTO %s ... ON CONFLICT (key) DO NOTHING
	delete  string // DELETE FROM %s WHERE key = $1
	live    [2]string
}

// tableOf is a table whose rows are R; projectors change it through it.
type tableOf[R any] struct{ *table }

// kind is how a column's Go type travels to the database.
type kind uint8

const (
	kindText     kind = iota // string
	kindNullText             // *string, nil is NULL
	kindInt                  // int, int64
	kindTime                 // time.Time
	kindNullTime             // *time.Time, nil is NULL
	kindJSON                 // []byte holding JSON (jsonb), nil is NULL
)

// nullable reports whether a column of kind k holds NULL as nil.
func (k kind) nullable() bool { return k == kindNullText || k == kindNullTime || k == kindJSON }

// kindOf is the kind of each Go type a column's field may have.
var kindOf = map[reflect.Type]kind{
	reflect.TypeFor[string]():     kindText,
	reflect.TypeFor[*string]():    kindNullText,
	reflect.TypeFor[int]():        kindInt,
	reflect.TypeFor[int64]():      kindInt,
	reflect.TypeFor[time.Time]():  kindTime,
	reflect.TypeFor[*time.Time](): kindNullTime,
	reflect.TypeFor[[]byte]():     kindJSON,
}

// newTable returns table name whose rows are R, every field of which is a
// column: `db:"column"`, in the table's order, the key (a string) first.
// It panics if R is not such a struct: tables are package variables,
// defined when the program starts.
func newTable[R any](name string) tableOf[R] {
	rt := reflect.TypeFor[R]()
	if rt.Kind() != reflect.Struct || rt.NumField() == 0 {
		panic(fmt.Sprintf("projections: the rows of %s are %s, not a struct of columns", name, rt))
	}
	if rt.NumField() > 64 {
		panic(fmt.Sprintf("projections: %s has %d columns; updates track at most 64", name, rt.NumField()))
	}
	t := &table{name: name, row: rt}
	params := make([]string, rt.NumField())
	for i := range rt.NumField() {
		f := rt.Field(i)
		column := f.Tag.Get("db")
		k, ok := kindOf[f.Type]
		switch {
		case column == "" || column == "-" || !f.IsExported():
			panic(fmt.Sprintf("projections: %s.%s is no column of %s: every field of a row is one, exported and tagged db", rt, f.Name, name))
		case !ok:
			panic(fmt.Sprintf("projections: %s.%s (column %s of %s) is a %s, which no column holds", rt, f.Name, column, name, f.Type))
		case i == 0 && k != kindText:
			panic(fmt.Sprintf("projections: the key of %s (%s.%s) is a %s, not a string", name, rt, f.Name, f.Type))
		case t.index(column) >= 0:
			panic(fmt.Sprintf("projections: %s has two columns %s", name, column))
		}
		t.columns = append(t.columns, column)
		t.kinds = append(t.kinds, k)
		t.names = append(t.names, strconv.Quote(column)+":")
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	t.insert = fmt.Sprintf("INSERT INTO %%s (%s) VALUES (%s) ON CONFLICT (%s) DO NOTHING",
		strings.Join(t.columns, ", "), strings.Join(params, ", "), t.key())
	t.delete = fmt.Sprintf("DELETE FROM %%s WHERE %s = $1", t.key())
	t.live = [2]string{t.insertIn(LiveSchema), t.deleteIn(LiveSchema)}
	return tableOf[R]{t}
}

// index returns the index of column, -1 if t has none.
func (t *table) index(column string) int {
	for i, c := range t.columns {
		if c == column {
			return i
		}
	}
	return -1
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

// keyOf returns the key of row, a *R of t.
func (t *table) keyOf(row any) string { return reflect.ValueOf(row).Elem().Field(0).String() }

// values returns the columns of row (a *R of t) in t's order, as INSERT
// and COPY take them (NULL as nil, a nullable value as itself rather than
// a pointer, which pgx would follow with reflect), in values if it has room.
func (t *table) values(row any, values []any) []any {
	v := reflect.ValueOf(row).Elem()
	values = slices.Grow(values[:0], len(t.columns))[:len(t.columns)]
	for i, k := range t.kinds {
		f := v.Field(i)
		switch {
		case k.nullable() && f.IsNil():
			values[i] = nil
		case k == kindNullText || k == kindNullTime:
			values[i] = f.Elem().Interface()
		default:
			values[i] = f.Interface()
		}
	}
	return values
}

// assign applies c to row, a *R of t.
func (t *table) assign(row any, c change) {
	f := reflect.ValueOf(row).Elem().Field(c.column)
	if c.add {
		f.SetInt(f.Int() + int64(c.value.(int)))
		return
	}
	f.Set(reflect.ValueOf(c.value))
}

// column is a column of the rows R whose values are V, as updates name it.
type column[R, V any] struct{ index int }

// columnOf returns the column name of t, whose rows hold it as a V. It
// panics if they do not: columns are package variables, defined when the
// program starts.
func columnOf[V, R any](t tableOf[R], name string) column[R, V] {
	i := t.index(name)
	if i < 0 {
		panic(fmt.Sprintf("projections: %s has no column %s", t.name, name))
	}
	if got, want := t.row.Field(i).Type, reflect.TypeFor[V](); got != want {
		panic(fmt.Sprintf("projections: column %s of %s holds a %s, not a %s", name, t.name, got, want))
	}
	return column[R, V]{index: i}
}

// assignment is one column of an update of a row of R: a new value, or
// an amount added.
type assignment[R any] struct{ change }

// change is an assignment as the writers receive it, whatever the table:
// the column's index, and its value (V) or the amount added (an int).
type change struct {
	column int
	value  any
	add    bool
}

// set assigns value to column c.
func set[R, V any](c column[R, V], value V) assignment[R] {
	return assignment[R]{change{column: c.index, value: value}}
}

// increment adds 1 to column c.
func increment[R any](c column[R, int]) assignment[R] {
	return assignment[R]{change{column: c.index, value: 1, add: true}}
}

// insert adds row unless its key exists; the writer keeps row.
func (t tableOf[R]) insert(w rowWriter, row *R) { w.Insert(t.table, row) }

// update assigns columns of the row with key, if there is one.
func (t tableOf[R]) update(w rowWriter, key string, assignments ...assignment[R]) {
	changes := make([]change, len(assignments))
	for i, a := range assignments {
		changes[i] = a.change
	}
	w.Update(t.table, key, changes)
}

// delete removes the row with key, if there is one.
func (t tableOf[R]) delete(w rowWriter, key string) { w.Delete(t.table, key) }

// rowWriter receives a projector's row changes (through tableOf, which
// types them).
type rowWriter interface {
	// Insert adds row (a *R of t, kept by the writer) unless its key exists.
	Insert(t *table, row any)
	// Update applies changes to the row with key, if there is one.
	Update(t *table, key string, changes []change)
	// Delete removes the row with key, if there is one.
	Delete(t *table, key string)
}

// sqlWriter queues each change as a statement of a batch, on the tables
// of schema.
type sqlWriter struct {
	b      *pgx.Batch
	schema string
}

func (w sqlWriter) Insert(t *table, row any) { w.b.Queue(t.insertIn(w.schema), t.values(row, nil)...) }

func (w sqlWriter) Delete(t *table, key string) { w.b.Queue(t.deleteIn(w.schema), key) }

func (w sqlWriter) Update(t *table, key string, changes []change) {
	var q strings.Builder
	args := make([]any, 0, len(changes)+1)
	args = append(args, key)
	fmt.Fprintf(&q, "UPDATE %s SET ", t.in(w.schema))
	for i, c := range changes {
		if i > 0 {
			q.WriteString(", ")
		}
		args = append(args, c.value)
		if c.add {
			fmt.Fprintf(&q, "%[1]s = %[1]s + $%[2]d", t.columns[c.column], len(args))
		} else {
			fmt.Fprintf(&q, "%s = $%d", t.columns[c.column], len(args))
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
	row     any // *R of the table
	deleted bool
}

func newFold(tables ...*table) *fold {
	f := &fold{tables: make(map[*table]*foldTable, len(tables))}
	for _, t := range tables {
		f.tables[t] = &foldTable{byKey: map[string]*foldRow{}}
	}
	return f
}

func (f *fold) Insert(t *table, row any) {
	ft := f.tables[t]
	key := t.keyOf(row)
	if _, ok := ft.byKey[key]; ok {
		return
	}
	r := &foldRow{row: row}
	ft.byKey[key] = r
	ft.rows = append(ft.rows, r)
}

func (f *fold) Update(t *table, key string, changes []change) {
	r, ok := f.tables[t].byKey[key]
	if !ok {
		return
	}
	for _, c := range changes {
		t.assign(r.row, c)
	}
}

func (f *fold) Delete(t *table, key string) {
	ft := f.tables[t]
	if r, ok := ft.byKey[key]; ok {
		r.deleted = true
		delete(ft.byKey, key)
	}
}

// copySource returns t's rows for pgx.CopyFrom, which encodes each row's
// values before it asks for the next: they are valid until then.
func (f *fold) copySource(t *table) pgx.CopyFromSource {
	ft := f.tables[t]
	rows := make([]any, 0, len(ft.byKey))
	for _, r := range ft.rows {
		if !r.deleted {
			rows = append(rows, r.row)
		}
	}
	values := make([]any, len(t.columns))
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return t.values(rows[i], values), nil })
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
	deleted bool // an existing row was deleted (before whatever follows)
	row     any  // inserted in this batch: the row (*R) as it ends up
	// The merged update of a row that existed before the batch: the
	// columns assigned (sets) and added to (adds), each a bit of the
	// column's index, and their values (or amounts) by index.
	sets, adds uint64
	values     []any
}

// shape is the columns an update assigns and adds to.
type shape struct{ sets, adds uint64 }

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

func (w *batchWriter) Insert(t *table, row any) {
	r := w.row(t, t.keyOf(row))
	if r.row != nil {
		return // present: an insert does nothing
	}
	r.row = row
}

func (w *batchWriter) Update(t *table, key string, changes []change) {
	r := w.row(t, key)
	switch {
	case r.row != nil:
		for _, c := range changes {
			t.assign(r.row, c)
		}
	case r.deleted:
		// deleted in this batch: no row to update
	default:
		if r.values == nil {
			r.values = make([]any, len(t.columns))
		}
		for _, c := range changes {
			bit := uint64(1) << c.column
			switch {
			case !c.add:
				r.sets |= bit
				r.adds &^= bit
				r.values[c.column] = c.value
			case (r.sets|r.adds)&bit != 0:
				r.values[c.column] = r.values[c.column].(int) + c.value.(int)
			default:
				r.adds |= bit
				r.values[c.column] = c.value
			}
		}
	}
}

func (w *batchWriter) Delete(t *table, key string) {
	r := w.row(t, key)
	if r.row != nil {
		r.row = nil // inserted in this batch: never sent
		return
	}
	r.deleted, r.sets, r.adds, r.values = true, 0, 0, nil
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
		var inserted bytes.Buffer
		updates := map[shape][]string{} // keys by shape
		var shapes []shape
		for _, key := range bt.keys {
			r := bt.rows[key]
			if r.deleted {
				deleted = append(deleted, key)
			}
			if r.row != nil {
				if inserted.Len() == 0 {
					inserted.WriteByte('[')
				} else {
					inserted.WriteByte(',')
				}
				t.appendRow(&inserted, r.row)
			}
			if s := (shape{r.sets, r.adds}); s != (shape{}) {
				if _, ok := updates[s]; !ok {
					shapes = append(shapes, s)
				}
				updates[s] = append(updates[s], key)
			}
		}
		if len(deleted) > 0 {
			b.Queue(fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1::text[])`, name, t.key()), deleted)
		}
		if inserted.Len() > 0 {
			inserted.WriteByte(']')
			b.Queue(fmt.Sprintf(`INSERT INTO %[1]s SELECT * FROM jsonb_populate_recordset(NULL::%[1]s, $1) ON CONFLICT (%[2]s) DO NOTHING`,
				name, t.key()), inserted.String())
		}
		for _, s := range shapes {
			keys := updates[s]
			var assign []string
			for i, c := range t.columns {
				if s.sets&(1<<i) != 0 {
					assign = append(assign, fmt.Sprintf("%[1]s = x.%[1]s", c))
				}
			}
			for i, c := range t.columns {
				if s.adds&(1<<i) != 0 {
					assign = append(assign, fmt.Sprintf("%[1]s = t.%[1]s + x.%[1]s", c))
				}
			}
			var rows bytes.Buffer
			rows.WriteByte('[')
			for i, key := range keys {
				if i > 0 {
					rows.WriteByte(',')
				}
				t.appendUpdate(&rows, key, s, bt.rows[key].values)
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

// appendRow appends the JSON object of row (a *R of t) to buf: every
// column, by name.
func (t *table) appendRow(buf *bytes.Buffer, row any) {
	v := reflect.ValueOf(row).Elem()
	buf.WriteByte('{')
	for i, k := range t.kinds {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(t.names[i])
		writeJSONValue(buf, k, v.Field(i))
	}
	buf.WriteByte('}')
}

// appendUpdate appends the JSON object of the update s of the row with
// key to buf: the key, then the columns assigned, then those added to,
// each in t's order, with values by column index.
func (t *table) appendUpdate(buf *bytes.Buffer, key string, s shape, values []any) {
	buf.WriteByte('{')
	buf.WriteString(t.names[0])
	writeJSONString(buf, key)
	for _, columns := range [2]uint64{s.sets, s.adds} {
		for i, k := range t.kinds {
			if columns&(1<<i) != 0 {
				buf.WriteByte(',')
				buf.WriteString(t.names[i])
				writeJSONValue(buf, k, reflect.ValueOf(values[i]))
			}
		}
	}
	buf.WriteByte('}')
}

// writeJSONValue writes v, a value of a column of kind k, as JSON.
func writeJSONValue(buf *bytes.Buffer, k kind, v reflect.Value) {
	switch k {
	case kindText:
		writeJSONString(buf, v.String())
	case kindNullText:
		if v.IsNil() {
			buf.WriteString("null")
		} else {
			writeJSONString(buf, v.Elem().String())
		}
	case kindInt:
		buf.Write(strconv.AppendInt(buf.AvailableBuffer(), v.Int(), 10))
	case kindTime:
		if v.CanAddr() { // a field: its address is an interface without a copy
			writeJSONTime(buf, *v.Addr().Interface().(*time.Time))
		} else {
			writeJSONTime(buf, v.Interface().(time.Time))
		}
	case kindNullTime:
		if v.IsNil() {
			buf.WriteString("null")
		} else {
			writeJSONTime(buf, *v.Interface().(*time.Time))
		}
	case kindJSON:
		// JSON already; empty is null.
		if raw := v.Bytes(); len(raw) > 0 {
			buf.Write(raw)
		} else {
			buf.WriteString("null")
		}
	}
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s)
	buf.Write(b)
}

func writeJSONTime(buf *bytes.Buffer, t time.Time) {
	buf.WriteByte('"')
	buf.Write(t.AppendFormat(buf.AvailableBuffer(), time.RFC3339Nano))
	buf.WriteByte('"')
}
