package domain

import "testing"

// TestEveryReasonHasALabel: every reason of the catalog has words of its
// own, not its code's last part.
func TestEveryReasonHasALabel(t *testing.T) {
	for _, code := range ReasonCodes() {
		if _, ok := reasonLabels[code]; !ok {
			t.Errorf("reason %s has no label", code)
		}
	}
}
