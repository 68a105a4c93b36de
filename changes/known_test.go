package changes

import (
	"slices"
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
	ids := []string{"R1", "R2", "C1"}

	s, missing := k.seed(at(0), ids)
	if !slices.Equal(missing, ids) {
		t.Fatalf("nothing known yet: %v missing, want %v", missing, ids)
	}
	s.runs["R1"] = &domain.Run{ID: "R1", Status: domain.StatusRunning}
	s.runs["R2"] = &domain.Run{ID: "R2", Status: domain.StatusSucceeded}
	s.conns["C1"] = &connections.Connection{ID: "C1"}
	k.commit(at(3), s)

	s, missing = k.seed(at(3), ids)
	if !slices.Equal(missing, []string{"R2"}) || s.runs["R1"] == nil || s.conns["C1"] == nil {
		t.Errorf("after the last commit: %v missing, known %v; want R2 alone missing (it ended)", missing, s)
	}
	// The batch folds into its own subjects; what is kept changes only
	// when it commits.
	s.runs["R1"] = &domain.Run{ID: "R1", Status: domain.StatusFailed}
	if k.runs["R1"].Status != domain.StatusRunning {
		t.Errorf("a batch not committed changed what is kept: %+v", k.runs["R1"])
	}

	// A batch read after another checkpoint (another process's batch came
	// between, or the commit was lost) reads everything.
	if _, missing = k.seed(at(5), ids); !slices.Equal(missing, ids) {
		t.Errorf("read after another checkpoint: %v missing, want %v", missing, ids)
	}
	if _, missing = k.seed(at(3), ids); !slices.Equal(missing, ids) {
		t.Errorf("once started afresh, nothing is known: %v missing, want %v", missing, ids)
	}
}
