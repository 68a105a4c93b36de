package changes

import (
	"strings"
	"testing"

	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
)

// TestKnown: subjects kept between batches are given to a batch only if it
// was read after the checkpoint the last committed batch left; the rest
// are read. Runs that ended are not kept.
func TestKnown(t *testing.T) {
	var k known
	at := func(p int64) eventstore.Checkpoint { return eventstore.Checkpoint{TxID: 7, Position: p} }
	runs, conns := []string{"R1", "R2"}, []string{"C1"}
	read := func(after eventstore.Checkpoint) (subjects, string) {
		s, rs, cs := k.seed(after, runs, conns)
		return s, strings.Join(append(rs, cs...), ",")
	}

	s, missing := read(at(0))
	if missing != "R1,R2,C1" {
		t.Fatalf("nothing known yet: %s read, want R1,R2,C1", missing)
	}
	s.runs["R1"] = &domain.Run{ID: "R1", Status: domain.StatusRunning}
	s.runs["R2"] = &domain.Run{ID: "R2", Status: domain.StatusSucceeded}
	s.conns["C1"] = &connections.Connection{ID: "C1"}
	k.commit(at(3), s)

	s, missing = read(at(3))
	if missing != "R2" || s.runs["R1"] == nil || s.conns["C1"] == nil {
		t.Errorf("after the last commit: %s read, known %v; want R2 alone read (it ended)", missing, s)
	}
	// The batch folds into its own subjects; what is kept changes only
	// when it commits.
	s.runs["R1"] = &domain.Run{ID: "R1", Status: domain.StatusFailed}
	if k.runs["R1"].Status != domain.StatusRunning {
		t.Errorf("a batch not committed changed what is kept: %+v", k.runs["R1"])
	}

	// A batch read after another checkpoint (another process's batch came
	// between, or the commit was lost) reads everything.
	if _, missing = read(at(5)); missing != "R1,R2,C1" {
		t.Errorf("read after another checkpoint: %s read, want R1,R2,C1", missing)
	}
	if _, missing = read(at(3)); missing != "R1,R2,C1" {
		t.Errorf("once started afresh, nothing is known: %s read, want R1,R2,C1", missing)
	}
}
