package changes

import (
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// maxKnown bounds the subjects the consumer keeps between batches; past
// it, it starts afresh (and reads them from the database as they come).
const maxKnown = 100_000

// known are subjects as the consumer's last committed batch left them in
// the database (the runs in their changes, the connections in
// change_subjects), kept between batches so that the next batch reads
// from the database only the subjects it does not hold. They are trusted only
// for a batch read after the checkpoint that batch committed: any other
// (a batch of another process came between, or the database lost the
// commit) starts them afresh. Runs that ended are not kept: no later
// change is expected of them.
type known struct {
	subjects
	at eventstore.Checkpoint // where the last committed batch left the checkpoint
}

func newSubjects() subjects {
	return subjects{runs: map[string]*domain.Run{}, conns: map[string]*connections.Connection{}}
}

// seed returns the subjects of a batch read after the checkpoint after,
// whose events need the runs and connections named: those known, and
// those that must be read from the database. The batch folds its events
// into the subjects it is given; k is left as it is until commit.
func (k *known) seed(after eventstore.Checkpoint, runs, conns []string) (s subjects, readRuns, readConns []string) {
	if k.runs == nil || after != k.at {
		k.subjects = newSubjects()
	}
	s = newSubjects()
	for _, id := range runs {
		if r, ok := k.runs[id]; ok {
			s.runs[id] = r
		} else {
			readRuns = append(readRuns, id)
		}
	}
	for _, id := range conns {
		if c, ok := k.conns[id]; ok {
			s.conns[id] = c
		} else {
			readConns = append(readConns, id)
		}
	}
	return s, readRuns, readConns
}

// commit takes in the subjects of a batch that committed, leaving the
// checkpoint at last.
func (k *known) commit(last eventstore.Checkpoint, s subjects) {
	if len(k.runs)+len(k.conns)+len(s.runs)+len(s.conns) > maxKnown {
		k.subjects = newSubjects()
	}
	for id, r := range s.runs {
		if r.Status.Terminal() {
			delete(k.runs, id)
		} else {
			k.runs[id] = r
		}
	}
	for id, c := range s.conns {
		k.conns[id] = c
	}
	k.at = last
}
