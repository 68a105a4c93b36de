package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// RateLimits bounds each caller's requests (contract section 16): a token
// bucket per token, or per integration and the user it acts for, in this
// process. It refuses with 429 rate_limited before the handler runs, so a
// refused request records nothing.
type RateLimits struct {
	// Rate is the requests per second each caller may send; 0 for no
	// limit.
	Rate float64
	// Burst is how many it may send at once.
	Burst int
	// Refused, if set, counts a refused request by the kind of its token.
	Refused func(kind string)

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	calls   int
}

// policy is the RateLimit-Policy header: the burst, and the seconds a
// drained bucket takes to fill again.
func (r *RateLimits) policy() string {
	return fmt.Sprintf(`"default";q=%d;w=%d`, r.Burst, int(math.Ceil(float64(r.Burst)/r.Rate)))
}

// take takes one request of key's bucket at now: whether it may go, the
// requests left, and when a refused one may come back.
func (r *RateLimits) take(key string, now time.Time) (ok bool, left int, retry time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buckets == nil {
		r.buckets = map[string]*rate.Limiter{}
	}
	if r.calls++; r.calls%4096 == 0 {
		// A full bucket is a new one: forget those, so that the map holds
		// only the callers of the last few seconds.
		for k, b := range r.buckets {
			if b.TokensAt(now) >= float64(r.Burst) {
				delete(r.buckets, k)
			}
		}
	}
	b := r.buckets[key]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(r.Rate), r.Burst)
		r.buckets[key] = b
	}
	if b.AllowN(now, 1) {
		return true, int(b.TokensAt(now)), 0
	}
	res := b.ReserveN(now, 1)
	retry = res.DelayFrom(now)
	res.CancelAt(now)
	return false, 0, retry
}

// limit lets c through if key's bucket allows it, with the RateLimit
// headers on the answer; kind names the caller's token in the metrics.
func (r *RateLimits) limit(c echo.Context, key, kind string) error {
	if r == nil || r.Rate <= 0 {
		return nil
	}
	ok, left, retry := r.take(key, time.Now())
	h := c.Response().Header()
	h.Set("RateLimit-Policy", r.policy())
	if ok {
		h.Set("RateLimit", fmt.Sprintf(`"default";r=%d;t=%d`, left, int(math.Ceil(float64(r.Burst-left)/r.Rate))))
		return nil
	}
	wait := max(1, int(math.Ceil(retry.Seconds())))
	h.Set("RateLimit", fmt.Sprintf(`"default";r=0;t=%d`, wait))
	if r.Refused != nil {
		r.Refused(kind)
	}
	return &rateLimited{retryAfter: wait}
}

// rateLimited is a request over its caller's rate.
type rateLimited struct{ retryAfter int }

func (e *rateLimited) Error() string {
	return "rate limited: retry after " + strconv.Itoa(e.retryAfter) + "s"
}

// exemptFromLimits reports whether req may never be refused for its rate:
// an executor's heartbeat or completion of a run it holds (a lease must
// not be lost to a rate limit).
func exemptFromLimits(req *http.Request) bool {
	p := req.URL.Path
	return strings.HasPrefix(p, "/api/v1/executor/runs/") && (strings.HasSuffix(p, "/heartbeat") || strings.HasSuffix(p, "/complete"))
}
