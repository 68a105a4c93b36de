//go:build race

package eventstore_test

// stressEvents is smaller under the race detector, which slows the writers
// and the subscriber many times over.
const stressEvents = 5000
