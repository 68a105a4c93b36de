//go:build !linux

package app

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not known:
// keepalive alone notices a host that froze.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }
