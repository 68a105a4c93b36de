package changes

import (
	"slices"
	"sync"
)

// recentSize is about how many changes Recent holds (up to half as many
// again): a client further behind reads from the database.
const recentSize = 4096

// Recent holds the changes this process's consumer committed last, in
// commit order and without a gap, so that a long poll or a stream woken by
// their commit is answered from memory rather than by another read of the
// database. What it answers is always a run of the feed that follows the
// cursor asked after: a batch that does not follow the one before (another
// process's consumer came between) starts it afresh. It may lag behind the
// database (changes another process committed), never run ahead of what
// committed.
type Recent struct {
	mu      sync.RWMutex
	first   int64    // the sequence number of list[0]
	changes []Change // first, first+1, ...
}

// NewRecent returns an empty Recent.
func NewRecent() *Recent { return &Recent{} }

// add takes in the changes of a committed batch, numbered from first.
func (r *Recent) add(first int64, batch []Change) {
	if len(batch) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if first != r.first+int64(len(r.changes)) {
		r.first, r.changes = first, r.changes[:0]
	}
	r.changes = append(r.changes, batch...)
	if over := len(r.changes) - recentSize; over > recentSize/2 {
		// Dropped in halves, so that a batch moves nothing.
		r.first += int64(over)
		r.changes = slices.Clone(r.changes[over:])
	}
}

// after returns up to limit changes of tenants after sequence number
// after, and whether it holds the changes that follow after (false: read
// the database). It answers only with changes to give: none of the
// tenants' among those it holds may mean that another process committed
// theirs since, which only the database knows.
func (r *Recent) after(tenants []string, after int64, limit int) ([]Change, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if after < r.first-1 || after >= r.first+int64(len(r.changes))-1 {
		return nil, false
	}
	sees := func(tenant string) bool { return slices.Contains(tenants, tenant) }
	if len(tenants) > 16 {
		set := make(map[string]bool, len(tenants))
		for _, t := range tenants {
			set[t] = true
		}
		sees = func(tenant string) bool { return set[tenant] }
	}
	var out []Change
	for _, c := range r.changes[after-r.first+1:] {
		if sees(c.TenantID) {
			if out = append(out, c); len(out) == limit {
				break
			}
		}
	}
	return out, len(out) > 0
}

// Following returns up to limit of the changes that follow sequence number
// after, of every tenant, the sequence number they run through (every
// change of the feed after after and up to through is among them), and
// whether it holds more after through. It returns none when it does not
// hold the change that follows after (read the database).
func (r *Recent) Following(after int64, limit int) (list []Change, through int64, more bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.changes) == 0 || after < r.first-1 || after >= r.first+int64(len(r.changes))-1 || limit <= 0 {
		return nil, 0, false
	}
	from := int(after - r.first + 1)
	to := min(from+limit, len(r.changes))
	return slices.Clone(r.changes[from:to]), r.first + int64(to) - 1, to < len(r.changes)
}
