package changes

import (
	"fmt"
	"strings"
	"testing"
)

// TestRecent: Recent answers only with changes that follow the cursor
// asked after without a gap, and leaves the rest to the database.
func TestRecent(t *testing.T) {
	batch := func(first int64, tenants ...string) []Change {
		out := make([]Change, len(tenants))
		for i, tenant := range tenants {
			out[i] = Change{ID: fmt.Sprint("E", first+int64(i)), Cursor: Cursor(first + int64(i)), TenantID: tenant}
		}
		return out
	}
	ids := func(list []Change) string {
		var s []string
		for _, c := range list {
			s = append(s, c.ID)
		}
		return strings.Join(s, ",")
	}
	r := NewRecent()
	check := func(what string, tenants []string, after int64, limit int, want string, wantOK bool) {
		t.Helper()
		got, ok := r.after(tenants, after, limit)
		if ids(got) != want || ok != wantOK {
			t.Errorf("%s: %q, %v; want %q, %v", what, ids(got), ok, want, wantOK)
		}
	}
	check("empty", []string{"A"}, 0, 10, "", false)
	r.add(5, batch(5, "A", "B", "A"))
	r.add(8, batch(8, "B", "A"))
	check("after the first held", []string{"A"}, 5, 10, "E7,E9", true)
	check("after the one before it", []string{"A", "B"}, 4, 3, "E5,E6,E7", true)
	check("before what it holds", []string{"A"}, 3, 10, "", false)
	check("after the last held", []string{"A"}, 9, 10, "", false)
	check("none of the tenant's", []string{"C"}, 4, 10, "", false)

	// A batch that does not follow (another process's came between)
	// starts afresh.
	r.add(20, batch(20, "A"))
	check("after a gap", []string{"A"}, 8, 10, "", false)
	check("after the gap", []string{"A"}, 19, 10, "E20", true)

	// Many tenants, and no more than about recentSize held.
	many := []string{"A"}
	for i := range 40 {
		many = append(many, fmt.Sprint("T", i))
	}
	next := int64(21)
	for range 3 * recentSize / 100 {
		list := make([]Change, 100)
		for i := range list {
			list[i] = batch(next+int64(i), "A")[0]
		}
		r.add(next, list)
		next += 100
	}
	if n := len(r.changes); n > recentSize*3/2 || n < recentSize {
		t.Errorf("holds %d changes, want %d to %d", n, recentSize, recentSize*3/2)
	}
	last := next - 1
	check("the last two, among many tenants", many, last-2, 10, fmt.Sprintf("E%d,E%d", last-1, last), true)
	check("dropped", many, 20, 10, "", false)
}

// TestRecentFollowing: a stream reads every change that follows its
// cursor, of every tenant, how far they run and whether more follow,
// while Recent holds the one that follows.
func TestRecentFollowing(t *testing.T) {
	r := NewRecent()
	add := func(first int64, n int) {
		list := make([]Change, n)
		for i := range list {
			list[i] = Change{ID: fmt.Sprint("E", first+int64(i)), TenantID: fmt.Sprint("T", i%3)}
		}
		r.add(first, list)
	}
	check := func(what string, after int64, limit int, want string, wantThrough int64, wantMore bool) {
		t.Helper()
		list, through, more := r.Following(after, limit)
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID)
		}
		if got := strings.Join(ids, ","); got != want || through != wantThrough || more != wantMore {
			t.Errorf("%s: %q through %d, more %v; want %q through %d, more %v", what, got, through, more, want, wantThrough, wantMore)
		}
	}
	check("empty", 0, 10, "", 0, false)
	add(5, 3)
	check("all of them", 4, 10, "E5,E6,E7", 7, false)
	check("up to the limit", 4, 2, "E5,E6", 6, true)
	check("after the first", 5, 10, "E6,E7", 7, false)
	check("none after the last", 7, 10, "", 0, false)
	check("before what it holds", 3, 10, "", 0, false)
	add(8, 1)
	check("a batch that follows", 7, 10, "E8", 8, false)
	add(20, 2)
	check("across a gap", 8, 10, "", 0, false)
	check("after a gap", 19, 10, "E20,E21", 21, false)

	// What it gives is the caller's: a batch added later changes nothing.
	list, _, _ := r.Following(19, 10)
	add(22, recentSize*2)
	if list[0].ID != "E20" || list[1].ID != "E21" {
		t.Errorf("the changes given moved to %s, %s", list[0].ID, list[1].ID)
	}
}
