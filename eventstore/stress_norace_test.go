//go:build !race

package eventstore_test

// stressEvents is how many committed events TestStress writes at least.
const stressEvents = 20000
