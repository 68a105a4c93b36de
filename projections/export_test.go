package projections

// SwapLock is the advisory lock a rebuild holds exclusively while it swaps
// schemas, for tests that stand in for a rebuild.
const SwapLock = swapLock
